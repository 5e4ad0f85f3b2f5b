//! Explicit numeric conversions.
//!
//! The crate denies `clippy::as_conversions`; every `as` lives here, in a
//! named function that documents what it does to values out of range.
#![allow(clippy::as_conversions)]

/// Exact for `n < 2^53`, which covers every count and length in this crate.
pub(crate) fn usize_f64(n: usize) -> f64 {
    n as f64
}

/// Exact for `n < 2^24`; histogram bin counts are capped at 8,000,000.
/// Larger values round to nearest, as NumPy's `int -> float32` does.
pub(crate) fn usize_f32(n: usize) -> f32 {
    n as f32
}

/// Rounds to nearest, like C's `(float)` of a 64-bit integer.
pub(crate) fn u64_f32(n: u64) -> f32 {
    n as f32
}

/// Rounds to nearest even (IEEE narrowing).
pub(crate) fn f64_f32(x: f64) -> f32 {
    x as f32
}

/// Truncation toward zero, as Python's `int(float)` and NumPy's
/// `astype(intp)`. `None` for NaN, negative or too large values.
pub(crate) fn f32_trunc_usize(x: f32) -> Option<usize> {
    f64_trunc_usize(f64::from(x))
}

/// Truncation toward zero; `None` for NaN, negative or too large values.
pub(crate) fn f64_trunc_usize(x: f64) -> Option<usize> {
    if !(0.0..9.007_199_254_740_992e15).contains(&x) {
        return None;
    }
    Some(x.trunc() as usize)
}

/// Truncation toward zero, saturating; NaN gives 0. Callers only pass
/// values that are already integral and small.
pub(crate) fn f32_trunc_i64(x: f32) -> i64 {
    x.trunc() as i64
}

pub(crate) fn i64_f32(n: i64) -> f32 {
    n as f32
}

/// Truncation toward zero of a histogram index `x`; compiles to one
/// `cvttps2dq`, so loops over it vectorise.
///
/// # Safety
/// `x` must be finite and in `[0, 2^24]` (not NaN): its truncation is then
/// an i32 exactly. Anything else is undefined behaviour
/// (`f32::to_int_unchecked`). Checked in debug builds only.
#[inline(always)]
pub(crate) unsafe fn f32_index_i32(x: f32) -> i32 {
    debug_assert!((0.0..=16_777_216.0).contains(&x));
    // SAFETY: the caller's contract: `x` is finite and in [0, 2^24].
    unsafe { x.to_int_unchecked::<i32>() }
}

/// A non-negative index as usize (negative values wrap; callers pass
/// indices from [`f32_index_i32`]).
#[inline(always)]
pub(crate) fn index_i32_usize(n: i32) -> usize {
    n as usize
}

/// A u32 index as usize (lossless on the 32- and 64-bit targets qtune builds for).
pub(crate) fn index_u32_usize(n: u32) -> usize {
    n as usize
}
