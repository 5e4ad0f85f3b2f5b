//! Dense, row-major tensors with a small set of element types, and npy/npz
//! reading and writing. This crate knows nothing of graphs or models.

mod atomic;
pub mod compare;
mod npz;
mod tensor;

pub use atomic::write_atomic;
pub use npz::{NpzError, read_npz, write_npz};
pub use tensor::{DType, Shape, Tensor, TensorData, TensorError};
