//! qtune-kernels
