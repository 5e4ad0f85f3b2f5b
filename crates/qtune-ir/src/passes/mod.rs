//! Graph passes, one file each. Constant folding needs to evaluate ops and
//! therefore lives with the executor (`qtune-exec`).

mod dead_nodes;
mod fold_batchnorm;

pub use dead_nodes::remove_dead_nodes;
pub use fold_batchnorm::fold_batchnorm_into_conv;
