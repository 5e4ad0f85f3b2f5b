//! Dense, row-major tensors with a small set of element types, and npy/npz
//! reading and writing. This crate knows nothing of graphs or models.

mod atomic;
pub mod compare;
mod npy;
mod npz;
mod size;
mod tensor;

pub use atomic::write_atomic;
pub use npy::{NpyError, npy_from_bytes, npy_to_bytes};
pub use npz::{NpzError, read_npz, write_npz};
pub use size::{
    SizeError, check_bytes, check_shape, checked_numel, machine_memory_bytes, set_allocation_limit,
};
pub use tensor::{DType, Shape, Tensor, TensorData, TensorError};
