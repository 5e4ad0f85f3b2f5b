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

/// Gives the allocator's free pages back to the kernel (glibc's
/// `malloc_trim`; nothing elsewhere). The commands tell glibc to keep freed
/// memory for reuse (qtune-cli's `keep_freed_memory`), so the resident size
/// stays at the high-water mark of every arena; a long walk whose steps free
/// what the next ones allocate again calls this between steps, so that what
/// one step freed in one thread's arena is not held beside what the next
/// step allocates in another's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock and only returns free
    // chunks to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
