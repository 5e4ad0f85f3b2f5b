//! Run-time CPU dispatch for hot loops, shared by the kernels and the
//! calibration statistics.
//!
//! A loop is written once as plain Rust and compiled three times: for the
//! baseline x86-64 target, and inside `#[target_feature]` functions for
//! AVX2+FMA and for AVX-512, chosen at run time with
//! `is_x86_feature_detected!`. The compiler never contracts `a * b + c` into
//! a fused multiply-add on its own, so a loop that uses only IEEE operations
//! (and explicit, exactly rounded `mul_add`) rounds alike in every copy:
//! results do not depend on which copy ran.

/// True when the AVX-512 (F, BW, VL, DQ) copy can run on this CPU.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// True when the AVX2+FMA copy can run on this CPU.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines `fn $name(args)` (no return value: results go through `&mut`
/// arguments) that runs `$body` compiled for the best available x86 feature
/// level. Arguments must be concrete types (no generics).
#[macro_export]
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
                if $crate::has_avx512() {
                    // SAFETY: the CPU supports every feature `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if $crate::has_avx2() {
                    // SAFETY: the CPU supports every feature `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

#[cfg(test)]
mod tests {
    dispatch! {
        fn double(x: &mut [f32]) {
            for v in x.iter_mut() {
                *v *= 2.0;
            }
        }
    }

    #[test]
    fn dispatched_function_runs() {
        let mut v = vec![1.0f32, -2.5, 3.0];
        double(&mut v);
        assert_eq!(v, [2.0, -5.0, 6.0]);
    }
}
