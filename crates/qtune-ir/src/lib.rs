//! qtune-ir
