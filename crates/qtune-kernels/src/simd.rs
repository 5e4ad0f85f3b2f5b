//! Run-time CPU dispatch and vectorisable math helpers.
//!
//! Hot loops are written once as plain slice-window loops and compiled twice: a generic
//! copy for the baseline target and a copy inside `#[target_feature(enable = "avx512f,..")]`
//! (or AVX2+FMA) chosen at run time with `is_x86_feature_detected!`. The compiler never
//! contracts `a * b + c` into a fused multiply-add on its own, and the only explicit
//! `mul_add` (in [`exp_approx`]) is exactly rounded on every CPU, so every copy rounds
//! alike: results do not depend on which copy ran.

pub(crate) use qtune_simd::dispatch;

/// `e^x` for f32, branch-free so loops over it vectorise.
///
/// Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2/2`, then a degree-7 Taylor
/// polynomial for `e^r` (truncation error < 5e-9 relative) and `2^n` built from the exponent
/// bits. Inputs are clamped to `[-87.33, 88.72]` so the result stays a normal float:
/// below the clamp the true value is subnormal or zero and the result is about 1.2e-38.
/// Maximum relative error against f64 `exp` over the normal range is tested to be below 1e-6
/// (a few ulps).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding it rounds to an integer (ties to even) held in the mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.33, 88.72);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let bits = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Fused multiply-adds: one rounding each, identical on every CPU (hardware FMA in
    // the AVX2/AVX-512 copies; the baseline copy falls back to the correctly rounded
    // software `fmaf`, slow but exact, only on CPUs without FMA).
    let p: f32 = 1.0 / 5040.0;
    let p = p.mul_add(r, 1.0 / 720.0);
    let p = p.mul_add(r, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    // n is in [-126, 128]; split 2^n into two factors so n = 128 does not overflow the
    // exponent field while the product is still finite for x <= 88.72.
    let half = bits >> 1;
    let s1 = f32::from_bits(((half + 127) << 23) as u32);
    let s2 = f32::from_bits(((bits - half + 127) << 23) as u32);
    p * s1 * s2
}

/// Logistic sigmoid `1 / (1 + e^-x)` using [`exp_approx`]; relative error below 1e-6 for
/// results in the normal range (tested).
#[inline(always)]
pub(crate) fn sigmoid_approx(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}

/// Error function for f32, branch-free so loops over it vectorise.
///
/// `|x| < 0.5`: the Taylor series of `erf` up to `x^15` (the first omitted term is
/// below 1e-11). `|x| >= 0.5`: Abramowitz & Stegun 7.1.26,
/// `1 - (a1 t + ... + a5 t^5) e^{-x^2}` with `t = 1 / (1 + p |x|)`, absolute error below
/// 1.5e-7, i.e. below 3e-7 relative since `erf(0.5) > 0.52`. Tested against the f64
/// series below.
#[inline(always)]
pub(crate) fn erf_approx(x: f32) -> f32 {
    let ax = x.abs();
    let x2 = x * x;
    // 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360 - x^15/75600)
    let q: f32 = -1.0 / 75600.0;
    let q = q.mul_add(x2, 1.0 / 9360.0);
    let q = q.mul_add(x2, -1.0 / 1320.0);
    let q = q.mul_add(x2, 1.0 / 216.0);
    let q = q.mul_add(x2, -1.0 / 42.0);
    let q = q.mul_add(x2, 1.0 / 10.0);
    let q = q.mul_add(x2, -1.0 / 3.0);
    let q = q.mul_add(x2, 1.0);
    let small = std::f32::consts::FRAC_2_SQRT_PI * x * q;
    let t = 1.0 / 0.327_591_1f32.mul_add(ax, 1.0);
    let p: f32 = 1.061_405_4;
    let p = p.mul_add(t, -1.453_152);
    let p = p.mul_add(t, 1.421_413_8);
    let p = p.mul_add(t, -0.284_496_74);
    let p = p.mul_add(t, 0.254_829_6);
    let large = (1.0 - p * t * exp_approx(-x2)).copysign(x);
    if ax < 0.5 { small } else { large }
}

/// Error function, evaluated in f64 and rounded once to f32.
///
/// For `|x| < 4` it uses the everywhere-positive series
/// `erf(x) = 2/sqrt(pi) * e^{-x^2} * sum_n 2^n x^{2n+1} / (1*3*...*(2n+1))`, which has no
/// cancellation, summed until the terms stop changing the f64 sum. For `|x| >= 4`,
/// `1 - erf(|x|) < 1.6e-8`, which is below half an f32 ulp of 1, so the result is `+-1`.
/// NaN propagates.
#[inline]
pub(crate) fn erf_f64(x: f64) -> f64 {
    let ax = x.abs();
    if ax.is_nan() {
        return x;
    }
    if ax >= 4.0 {
        return 1.0f64.copysign(x);
    }
    let x2 = ax * ax;
    let mut term = ax;
    let mut sum = ax;
    let mut k = 0.0f64;
    // At |x| < 4 the terms peak near n = 16 and fall below 1e-17 of the sum before n = 120.
    for _ in 0..160 {
        k += 1.0;
        term *= 2.0 * x2 / (2.0 * k + 1.0);
        let next = sum + term;
        if next == sum {
            break;
        }
        sum = next;
    }
    let r = std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum;
    r.min(1.0).copysign(x)
}
