//! Checked sizes for everything whose extent comes from a file: dimensions
//! are multiplied with overflow checks, and a buffer that would not fit in
//! this machine's memory is refused with an error before anything is
//! allocated (Rust's allocator aborts the process on failure, and a
//! `vec![0; n]` with an overflowing `n` panics: neither is an answer to a
//! crafted file).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tensor::DType;

/// Why a size taken from a file cannot be allocated.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("{what}: the element count of shape {dims:?} overflows")]
    Overflow { what: String, dims: Vec<usize> },
    #[error("{what}: {bytes} bytes needed, more than this machine's memory ({limit} bytes)")]
    TooLarge {
        what: String,
        bytes: u128,
        limit: u64,
    },
}

/// Product of the dimensions, or `None` when it overflows `usize`.
pub fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A lower allocation limit than the machine's memory, set by
/// [`set_allocation_limit`] (0: none).
static LIMIT_OVERRIDE: AtomicU64 = AtomicU64::new(0);

/// Lowers the largest buffer [`check_bytes`] accepts (the fuzz harnesses
/// use it so that a crafted 4 GB constant is an error, not an OOM report;
/// a memory budget may use it too). `None` restores the machine's memory.
pub fn set_allocation_limit(bytes: Option<u64>) {
    LIMIT_OVERRIDE.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The largest buffer qtune agrees to allocate: the machine's physical
/// memory (`MemTotal` of `/proc/meminfo`; 1 TiB where that cannot be read),
/// or a lower limit set with [`set_allocation_limit`]. A buffer above it
/// cannot be held however the memory is shared out, so it is refused with a
/// message instead of left to the allocator, which aborts.
pub fn machine_memory_bytes() -> u64 {
    match LIMIT_OVERRIDE.load(Ordering::Relaxed) {
        0 => physical_memory_bytes(),
        n => n.min(physical_memory_bytes()),
    }
}

fn physical_memory_bytes() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                kb.checked_mul(1024)
            })
            .unwrap_or(1 << 40)
    })
}

/// Checks that `count` items of `item_bytes` bytes each may be allocated;
/// returns the byte count. `what` names the file and the thing for the
/// message.
pub fn check_bytes(
    what: &dyn Fn() -> String,
    count: usize,
    item_bytes: usize,
) -> Result<usize, SizeError> {
    let bytes = (count as u128) * (item_bytes as u128);
    let limit = machine_memory_bytes();
    if bytes > u128::from(limit) {
        return Err(SizeError::TooLarge {
            what: what(),
            bytes,
            limit,
        });
    }
    usize::try_from(bytes).map_err(|_| SizeError::TooLarge {
        what: what(),
        bytes,
        limit,
    })
}

/// Checks that a tensor of `dims` and `dtype` may be allocated: its element
/// count does not overflow and its bytes fit in the machine's memory.
/// Returns the element count.
pub fn check_shape(
    what: &dyn Fn() -> String,
    dims: &[usize],
    dtype: DType,
) -> Result<usize, SizeError> {
    let n = checked_numel(dims).ok_or_else(|| SizeError::Overflow {
        what: what(),
        dims: dims.to_vec(),
    })?;
    check_bytes(what, n, dtype.size_bytes())?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_and_oversize_are_errors_and_small_shapes_pass() {
        let what = || "t".to_string();
        assert_eq!(checked_numel(&[]), Some(1));
        assert_eq!(checked_numel(&[3, 0, usize::MAX]), Some(0));
        assert_eq!(checked_numel(&[1 << 32, 1 << 32, 5, 5]), None);
        assert_eq!(check_shape(&what, &[2, 3], DType::F32), Ok(6));
        assert!(matches!(
            check_shape(&what, &[1 << 32, 1 << 32, 5, 5], DType::F32),
            Err(SizeError::Overflow { .. })
        ));
        // 2^62 bytes are more than any machine this runs on, and the byte
        // count itself overflows usize on 64-bit (u128 arithmetic).
        let err = check_shape(&what, &[1 << 30, 1 << 30], DType::I64).unwrap_err();
        assert!(matches!(err, SizeError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than this machine's memory"));
        let mem = usize::try_from(machine_memory_bytes()).unwrap();
        assert!(check_bytes(&what, mem, 1).is_ok());
        assert!(check_bytes(&what, mem + 1, 1).is_err());
    }
}
