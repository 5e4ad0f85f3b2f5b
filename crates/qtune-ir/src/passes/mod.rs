//! Graph passes, one file each. Constant folding needs to evaluate ops and
//! therefore lives with the executor (`qtune-exec`).

pub mod canonical;
mod dead_nodes;
mod fold_batchnorm;
mod top_names;

pub use canonical::{CanonicalReport, canonicalize, fuse_relus};
pub use dead_nodes::remove_dead_nodes;
pub use fold_batchnorm::{FoldedName, fold_batchnorm_into_conv, fold_batchnorm_into_conv_named};
pub use top_names::name_as_top_ops;
