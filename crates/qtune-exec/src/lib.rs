//! qtune-exec
