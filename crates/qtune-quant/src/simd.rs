//! Run-time CPU dispatch for the statistics hot loops (the pattern of
//! `qtune-kernels/src/simd.rs`, kept separate because qtune-quant depends on
//! qtune-tensor only).
//!
//! A loop is written once as plain Rust and compiled three times: for the
//! baseline x86-64 target and inside `#[target_feature]` functions for
//! AVX2+FMA and AVX-512, chosen at run time. Only operations that round the
//! same way in every copy are used (IEEE `+`, `/`, compares, selects,
//! truncating conversions of values already known to be in range; the
//! compiler never fuses `a * b + c` on its own), so results do not depend on
//! the copy that ran.

/// True when the AVX-512 (F, BW, VL, DQ) copy can run on this CPU.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// True when the AVX2+FMA copy can run on this CPU.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines `fn $name(args)` (no return value: results go through `&mut`
/// arguments) that runs `$body` compiled for the best available x86 feature
/// level. Arguments must be concrete types.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    inner($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    inner($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU supports every feature `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU supports every feature `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use dispatch;
