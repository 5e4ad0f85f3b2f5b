//! Differential tests: every fast kernel against its reference twin in [`crate::reference`],
//! on deterministic random shapes; plus accuracy tests of the approximations and
//! thread-count determinism tests.

use crate::reference as r;
use crate::*;

/// Allowed absolute error per accumulated term for inputs in [-1, 1] (f32 sums of products
/// against an f64 reference).
pub(crate) const TOL_PER_TERM: f32 = 2e-6;
/// Error of a Winograd F(4x4, 3x3) output, relative to the sum of its terms' magnitudes.
const TOL_WINOGRAD: f64 = 1e-5;
/// Relative tolerance for elementwise ops computed with std f32 math vs f64.
pub(crate) const TOL_ELEMENTWISE_REL: f32 = 4e-6;
/// Absolute floor of elementwise comparisons (for results near zero).
pub(crate) const TOL_ELEMENTWISE_ABS: f32 = 1e-6;
/// Maximum relative error of the vectorised sigmoid / exp and of erf against f64.
const TOL_APPROX_REL: f64 = 1e-6;
/// Tolerance for bilinear resize (a few f32 roundings of values in [-1, 1]).
const TOL_RESIZE: f32 = 1e-6;

/// A tiny xorshift64* generator: deterministic and dependency-free.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub(crate) fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

pub(crate) fn assert_close(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            continue;
        }
        let ok = g == w || (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{name}: element {i}: got {g}, want {w}");
    }
}

pub(crate) fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("test thread pool")
}

// ---------------------------------------------------------------- gemm

#[test]
fn gemm_matches_reference() {
    let mut rng = Rng::new(1);
    let mut shapes = vec![
        (1, 1, 1),
        (3, 5, 7),
        (17, 33, 9),
        (64, 576, 300),
        (300, 20, 530),
        (1, 100, 1),
    ];
    for _ in 0..12 {
        shapes.push((rng.range(1, 70), rng.range(1, 90), rng.range(1, 70)));
    }
    for (m, k, n) in shapes {
        for (at, bt, acc) in [
            (false, false, false),
            (true, false, true),
            (false, true, false),
            (true, true, true),
        ] {
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let c0 = rng.vec(m * n);
            let mut got = c0.clone();
            let mut want = c0.clone();
            gemm(m, k, n, &a, at, &b, bt, &mut got, acc, Parallelism::Rayon);
            r::gemm(m, k, n, &a, at, &b, bt, &mut want, acc);
            assert_close(
                &format!("gemm {m}x{k}x{n} {at} {bt} {acc}"),
                &got,
                &want,
                TOL_PER_TERM * (k + 1) as f32,
                0.0,
            );
        }
    }
}

/// Products of at most `FEW_ROWS_MAX` rows (batch-1 fully connected layers) against the
/// chain of fused multiply-adds over the depth they promise, bit for bit: B packed on the call
/// (`gemm`) and once beforehand (`gemm_few_rows`), in both of its layouts, A transposed or
/// not, accumulating or not, on one and two threads; and within the usual tolerance with the
/// kernel turned off (the `gemm` crate, what CPUs without AVX-512 run).
#[test]
fn few_rows_products_match_fma_chain_bit_for_bit() {
    let mut rng = Rng::new(31);
    let mut shapes = vec![
        (1, 1280, 256),
        (1, 1280, 1000),
        (1, 128, 5),
        (2, 37, 5),
        (3, 100, 63),
        (4, 17, 64),
        (1, 5, 130),
        (1, 1, 1),
    ];
    for _ in 0..8 {
        shapes.push((rng.range(1, 4), rng.range(1, 300), rng.range(1, 200)));
    }
    for (m, k, n) in shapes {
        for (at, bt, acc) in [
            (false, false, false),
            (true, false, true),
            (false, true, false),
            (true, true, true),
        ] {
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let c0 = rng.vec(m * n);
            let mut want = c0.clone();
            for i in 0..m {
                for j in 0..n {
                    let mut sum = 0.0f32;
                    for kk in 0..k {
                        let x = if at { a[kk * m + i] } else { a[i * k + kk] };
                        let y = if bt { b[j * k + kk] } else { b[kk * n + j] };
                        sum = x.mul_add(y, sum);
                    }
                    want[i * n + j] = if acc { c0[i * n + j] + sum } else { sum };
                }
            }
            let packed = FewRowsWeights::new(&b, k, n, bt);
            let label = format!("{m}x{k}x{n} a_trans {at} b_trans {bt} accumulate {acc}");
            for threads in [1, 2] {
                pool(threads).install(|| {
                    let mut got = c0.clone();
                    gemm(m, k, n, &a, at, &b, bt, &mut got, acc, Parallelism::Rayon);
                    assert_eq!(bits(&got), bits(&want), "gemm {label}, {threads} threads");
                    let mut got = c0.clone();
                    let taken =
                        gemm_few_rows(m, &a, at, &packed, &mut got, acc, Parallelism::Rayon);
                    assert!(taken, "gemm_few_rows {label}: not taken");
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "gemm_few_rows {label}, {threads} threads"
                    );
                });
            }
            crate::rowvec::OFF.set(true);
            let mut got = c0.clone();
            gemm(
                m,
                k,
                n,
                &a,
                at,
                &b,
                bt,
                &mut got,
                acc,
                Parallelism::Sequential,
            );
            let taken = gemm_few_rows(
                m,
                &a,
                at,
                &packed,
                &mut got.clone(),
                acc,
                Parallelism::Sequential,
            );
            crate::rowvec::OFF.set(false);
            assert!(!taken, "gemm_few_rows {label}: taken with the kernel off");
            assert_close(
                &format!("gemm crate {label}"),
                &got,
                &want,
                TOL_PER_TERM * (k + 1) as f32,
                0.0,
            );
        }
    }
}

#[test]
fn batched_gemm_matches_loop() {
    let mut rng = Rng::new(2);
    let (batch, m, k, n) = (3, 7, 11, 5);
    let a = rng.vec(batch * m * k);
    let b = rng.vec(k * n);
    let mut got = vec![0.0; batch * m * n];
    batched_gemm(
        batch,
        m,
        k,
        n,
        &a,
        m * k,
        false,
        &b,
        0,
        false,
        &mut got,
        Parallelism::Rayon,
    );
    for i in 0..batch {
        let mut want = vec![0.0; m * n];
        r::gemm(m, k, n, &a[i * m * k..], false, &b, false, &mut want, false);
        assert_close(
            "batched_gemm",
            &got[i * m * n..(i + 1) * m * n],
            &want,
            TOL_PER_TERM * k as f32,
            0.0,
        );
    }
}

// ---------------------------------------------------------------- conv

struct ConvCase {
    in_dims: [usize; 4],
    w_dims: [usize; 4],
    p: Conv2dParams,
    bias: bool,
}

fn conv_case(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    k: [usize; 2],
    s: [usize; 2],
    pads: [usize; 4],
    d: [usize; 2],
    g: usize,
) -> ConvCase {
    ConvCase {
        in_dims: [n, c, h, w],
        w_dims: [m, c / g, k[0], k[1]],
        p: Conv2dParams::new(s, pads, d, g),
        bias: (n + c + h).is_multiple_of(2),
    }
}

fn conv_cases() -> Vec<ConvCase> {
    let mut v = vec![
        conv_case(1, 3, 9, 11, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(2, 4, 7, 5, 6, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(1, 8, 13, 13, 4, [1, 1], [2, 2], [0; 4], [1, 1], 1),
        conv_case(1, 6, 10, 9, 6, [3, 3], [2, 2], [0, 1, 2, 0], [1, 1], 2),
        conv_case(2, 5, 12, 11, 3, [3, 2], [1, 2], [2, 1, 0, 3], [2, 2], 1),
        conv_case(1, 16, 20, 20, 300, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(1, 32, 23, 17, 40, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 3, 4, 4, 2, [5, 5], [1, 1], [0; 4], [1, 1], 1),
        conv_case(1, 3, 4, 4, 2, [5, 5], [3, 1], [2, 2, 2, 2], [1, 1], 1),
        conv_case(1, 8, 9, 9, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 4),
        conv_case(1, 3, 21, 75, 8, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 2, 9, 70, 4, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 1),
        conv_case(1, 4, 20, 69, 4, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 4),
        // Few pixels, many channels: channel tiles of 20 (not a multiple of 16), 1x1 and 3x3.
        conv_case(1, 96, 7, 7, 160, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(1, 24, 9, 9, 44, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(2, 8, 5, 6, 36, [1, 1], [1, 1], [0; 4], [1, 1], 2),
    ];
    // Depthwise, including every special path (3x3, 5x5, other widths; stride 1, 2, 3).
    for (k, s, pads, d) in [
        ([3, 3], [1, 1], [1, 1, 1, 1], [1, 1]),
        ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1]),
        ([3, 3], [2, 2], [0, 0, 1, 1], [1, 1]),
        ([5, 5], [1, 1], [2, 2, 2, 2], [1, 1]),
        ([5, 5], [2, 2], [1, 2, 2, 1], [1, 1]),
        ([3, 3], [1, 1], [2, 2, 2, 2], [2, 2]),
        ([7, 4], [1, 1], [3, 1, 3, 2], [1, 1]),
        ([3, 3], [3, 3], [1, 0, 0, 2], [1, 2]),
        ([1, 1], [1, 1], [0; 4], [1, 1]),
        ([3, 3], [1, 2], [0; 4], [1, 1]),
    ] {
        v.push(conv_case(2, 7, 11, 13, 7, k, s, pads, d, 7));
        v.push(conv_case(1, 3, 4, 3, 3, k, s, pads, d, 3));
        v.push(conv_case(1, 5, 10, 12, 5, k, s, pads, d, 5));
    }
    let mut rng = Rng::new(3);
    for _ in 0..25 {
        let g = [1, 1, 2, 3][rng.range(0, 3)];
        let c = g * rng.range(1, 4);
        let m = g * rng.range(1, 5);
        let k = [rng.range(1, 4), rng.range(1, 4)];
        let s = [rng.range(1, 2), rng.range(1, 3)];
        let d = [rng.range(1, 2), rng.range(1, 2)];
        let pads = [
            rng.range(0, 2),
            rng.range(0, 2),
            rng.range(0, 2),
            rng.range(0, 2),
        ];
        let h = rng.range((k[0] - 1) * d[0] + 1, 14);
        let w = rng.range((k[1] - 1) * d[1] + 1, 14);
        v.push(conv_case(rng.range(1, 2), c, h, w, m, k, s, pads, d, g));
    }
    v
}

/// Every conv case against the f64 reference, within the per-term tolerance.
fn check_conv_cases(label: &str, par: Parallelism) {
    let mut rng = Rng::new(4);
    for (i, cs) in conv_cases().iter().enumerate() {
        let input = rng.vec(cs.in_dims.iter().product());
        let weight = rng.vec(cs.w_dims.iter().product());
        let bias = rng.vec(cs.w_dims[0]);
        let bias = cs.bias.then_some(bias.as_slice());
        let od = conv2d_out_dims(cs.in_dims, cs.w_dims, &cs.p);
        let mut got = vec![f32::NAN; od.iter().product()];
        let mut want = vec![0.0; got.len()];
        conv2d(
            &input, cs.in_dims, &weight, cs.w_dims, bias, &cs.p, &mut got, par,
        );
        r::conv2d(
            &input, cs.in_dims, &weight, cs.w_dims, bias, &cs.p, &mut want,
        );
        let terms = cs.w_dims[1] * cs.w_dims[2] * cs.w_dims[3] + 1;
        assert_close(
            &format!(
                "{label} case {i} {:?} {:?} {:?}",
                cs.in_dims, cs.w_dims, cs.p
            ),
            &got,
            &want,
            TOL_PER_TERM * terms as f32,
            0.0,
        );
    }
}

#[test]
fn conv2d_matches_reference() {
    check_conv_cases("conv", Parallelism::Rayon);
}

/// `conv2d_matches_reference` with the direct kernel switched off on this thread: the
/// im2col + `gemm` path, which CPUs without AVX-512 run.
#[test]
fn conv2d_im2col_path_matches_reference() {
    crate::direct::DIRECT_OFF.set(true);
    check_conv_cases("im2col", Parallelism::Sequential);
    crate::direct::DIRECT_OFF.set(false);
}

/// Random dense convolutions for the direct kernel: strides 1-3, dilations 1-2, groups,
/// asymmetric pads, batch 1-3, kernels 1x1 to 5x5 (3x3 and 1x1 have their own unrolled
/// loops), depths above one depth chunk, channel counts that are not a multiple of the
/// weight block, maps from one pixel to more than one row tile.
fn direct_cases() -> Vec<ConvCase> {
    let mut v = vec![
        // The shapes of the detection models, reduced in depth.
        conv_case(1, 40, 52, 52, 24, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 12, 41, 40, 16, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1),
        conv_case(2, 64, 13, 13, 20, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 300, 7, 9, 9, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(3, 7, 30, 33, 17, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(1, 6, 20, 21, 8, [1, 1], [2, 2], [0; 4], [1, 1], 1),
        conv_case(1, 3, 64, 64, 16, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 1),
        conv_case(1, 4, 1, 1, 8, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 8, 11, 70, 12, [5, 5], [1, 1], [2, 2, 2, 2], [1, 1], 2),
        conv_case(1, 6, 15, 16, 9, [3, 3], [1, 1], [2, 2, 2, 2], [2, 2], 3),
        conv_case(2, 16, 9, 9, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 4),
    ];
    let mut rng = Rng::new(31);
    for _ in 0..60 {
        let g = [1, 1, 1, 2, 3][rng.range(0, 4)];
        let c = g * rng.range(1, 40);
        let m = g * rng.range(1, 20);
        let k = [rng.range(1, 5), rng.range(1, 5)];
        let s = [rng.range(1, 3), rng.range(1, 3)];
        let d = [rng.range(1, 2), rng.range(1, 2)];
        let pads = [
            rng.range(0, 2),
            rng.range(0, 3),
            rng.range(0, 2),
            rng.range(0, 3),
        ];
        let h = rng.range(
            ((k[0] - 1) * d[0] + 1)
                .saturating_sub(pads[0] + pads[2])
                .max(1),
            30,
        );
        let w = rng.range(
            ((k[1] - 1) * d[1] + 1)
                .saturating_sub(pads[1] + pads[3])
                .max(1),
            45,
        );
        v.push(conv_case(rng.range(1, 3), c, h, w, m, k, s, pads, d, g));
    }
    v
}

/// One convolution's operands, for tests that run it through
/// [`conv2d_fused_packed_uninit`] several ways.
struct ConvCall<'a> {
    input: &'a [f32],
    in_dims: [usize; 4],
    weight: &'a [f32],
    w_dims: [usize; 4],
    bias: Option<&'a [f32]>,
    p: Conv2dParams,
    act: Option<UnaryOp>,
}

impl ConvCall<'_> {
    /// The convolution with these packed weights (or none), into an output that starts as
    /// NaN, so that an element the kernel forgot to write fails the comparison.
    fn run(&self, packed: Option<&PackedConvWeights>, par: Parallelism) -> Vec<f32> {
        let od = conv2d_out_dims(self.in_dims, self.w_dims, &self.p);
        let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); od.iter().product()];
        conv2d_fused_packed_uninit(
            self.input,
            self.in_dims,
            self.weight,
            self.w_dims,
            packed,
            self.bias,
            &self.p,
            self.act,
            &mut got,
            par,
        );
        // SAFETY: initialised with NaN above.
        got.iter().map(|v| unsafe { v.assume_init() }).collect()
    }
}

/// Runs `run(par, packed_once)` sequentially and in pools of 1 and 2 threads with the
/// weights packed once, and once with them packed per call: all must agree bit for bit.
/// Returns the sequential result.
fn check_packed_runs(name: &str, run: impl Fn(Parallelism, bool) -> Vec<f32> + Sync) -> Vec<f32> {
    check_deterministic(name, |par| run(par, true));
    let got = run(Parallelism::Sequential, true);
    assert_eq!(
        bits(&got),
        bits(&run(Parallelism::Rayon, false)),
        "{name}: packed once vs per call"
    );
    got
}

/// `got` equals `want` bit for bit, naming the first element that does not.
fn assert_same_bits(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{name}: element {j}: got {g}, want {w}"
        );
    }
}

/// One case of a kernel that sums in the direct kernel's order: random input, weights and
/// (if the case has one) bias from `rng`; the reference [`r::conv2d_fma_ordered`] with `act`
/// (a clamp inside it, any other activation applied to its result); and the kernel's output
/// through [`check_packed_runs`] (sequentially, in pools of 1 and 2 threads, with the weights
/// `pack` returns and packed per call), calling `force` first on whichever thread runs.
/// Returns `(got, want)`.
fn ordered_case_runs(
    rng: &mut Rng,
    cs: &ConvCase,
    name: &str,
    act: Option<UnaryOp>,
    pack: impl Fn(&[f32]) -> PackedConvWeights,
    force: impl Fn() + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let od = conv2d_out_dims(cs.in_dims, cs.w_dims, &cs.p);
    let input = rng.vec(cs.in_dims.iter().product());
    let weight: Vec<f32> = rng.vec(cs.w_dims.iter().product());
    let bias = rng.vec(cs.w_dims[0]);
    let bias = cs.bias.then_some(bias.as_slice());
    let clamp = match act {
        Some(UnaryOp::Clip { lo, hi }) => Some((lo, hi)),
        Some(UnaryOp::Relu) => Some((0.0, f32::INFINITY)),
        _ => None,
    };
    let mut want = vec![0.0; od.iter().product()];
    r::conv2d_fma_ordered(
        &input, cs.in_dims, &weight, cs.w_dims, bias, &cs.p, clamp, &mut want,
    );
    if let Some(a) = act.filter(|_| clamp.is_none()) {
        crate::unary::apply_in_place(a, &mut want);
    }
    let packed = pack(&weight);
    let call = ConvCall {
        input: &input,
        in_dims: cs.in_dims,
        weight: &weight,
        w_dims: cs.w_dims,
        bias,
        p: cs.p,
        act,
    };
    let got = check_packed_runs(name, |par, pre| {
        force();
        call.run(pre.then_some(&packed), par)
    });
    (got, want)
}

/// The direct kernel against the reference that sums in its order, bit for bit, with and
/// without bias and a fused Relu6, in pools of 1 and 2 threads and sequentially, through
/// both entry points (weights packed per call, and packed once beforehand). Outputs start
/// as NaN, so an element the kernel forgot to write fails.
#[test]
fn direct_conv_matches_ordered_reference_bit_for_bit() {
    // Every geometry, also those the size rules send to im2col (small strided maps, depth
    // below 64, 1x1): the kernel must be right on all of them.
    crate::direct::DIRECT_ALWAYS.set(true);
    let mut rng = Rng::new(32);
    let relu6 = UnaryOp::Clip { lo: 0.0, hi: 6.0 };
    let mut covered = 0;
    for (i, cs) in direct_cases().iter().enumerate() {
        let od = conv2d_out_dims(cs.in_dims, cs.w_dims, &cs.p);
        let len: usize = od.iter().product();
        if len == 0 {
            continue;
        }
        let direct = conv2d_uses_direct(cs.in_dims, cs.w_dims, &cs.p);
        covered += usize::from(direct);
        let act = (i % 3 == 0).then_some(relu6);
        let name = format!(
            "direct case {i} {:?} {:?} {:?}",
            cs.in_dims, cs.w_dims, cs.p
        );
        let (got, want) = ordered_case_runs(
            &mut rng,
            cs,
            &name,
            act,
            |w| PackedConvWeights::new(w, cs.w_dims, cs.p.group),
            // The size rules are switched off per thread: on whichever pool thread runs.
            || crate::direct::DIRECT_ALWAYS.set(true),
        );
        if direct {
            assert_same_bits(&name, &got, &want);
        } else {
            let terms = cs.w_dims[1] * cs.w_dims[2] * cs.w_dims[3] + 1;
            assert_close(&name, &got, &want, TOL_PER_TERM * terms as f32, 0.0);
        }
    }
    crate::direct::DIRECT_ALWAYS.set(false);
    assert!(
        covered > 60 || !crate::direct::direct_available(),
        "only {covered} cases ran the direct kernel"
    );
}

/// The channel-vector kernel against the reference that sums in the direct kernel's order,
/// bit for bit: the direct kernel's geometries (strides 1 and 2, dilation, groups, pads
/// wider than the window, batch 2) and the detection models' shapes it is chosen for
/// (stride 2 on 208 -> 104 and 20 -> 10 maps, 10x10 and 13x13 stride-1 maps, rows of 1 to
/// past 12 pixels in runs of unequal length, channel counts that leave a single block or a
/// partial one), with and without bias, with Relu6 or SiLU (the SiLU output equal to the
/// convolution then SiLU); sequentially and in pools of 1 and 2 threads, weights packed once
/// and per call, into NaN-filled outputs.
#[test]
fn chanvec_matches_ordered_reference_bit_for_bit() {
    // Every geometry with strides 1 and 2 on this kernel, none on Winograd.
    let force = || {
        crate::chanvec::ALWAYS.set(true);
        crate::direct::DIRECT_ALWAYS.set(true);
    };
    force();
    let mut cases = direct_cases();
    cases.extend([
        conv_case(1, 24, 45, 41, 48, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 40, 20, 20, 70, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 64, 10, 10, 64, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(2, 32, 13, 13, 32, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 16, 9, 27, 33, [3, 3], [1, 2], [0, 2, 1, 0], [1, 1], 1),
        conv_case(1, 8, 12, 31, 17, [2, 3], [2, 1], [1, 0, 0, 1], [2, 1], 1),
    ]);
    let mut rng = Rng::new(36);
    let mut covered = 0;
    for (i, cs) in cases.iter().enumerate() {
        let od = conv2d_out_dims(cs.in_dims, cs.w_dims, &cs.p);
        let len: usize = od.iter().product();
        if len == 0 || !crate::chanvec::uses_chanvec(cs.in_dims, cs.w_dims, &cs.p) {
            continue;
        }
        covered += 1;
        let act = match i % 3 {
            0 => Some(UnaryOp::Clip { lo: 0.0, hi: 6.0 }),
            1 => Some(UnaryOp::Silu),
            _ => None,
        };
        let name = format!(
            "chanvec case {i} {:?} {:?} {:?} {act:?}",
            cs.in_dims, cs.w_dims, cs.p
        );
        let (got, want) = ordered_case_runs(
            &mut rng,
            cs,
            &name,
            act,
            |w| PackedConvWeights::chanvec(w, cs.w_dims, cs.p.group),
            force,
        );
        assert_same_bits(&name, &got, &want);
    }
    crate::chanvec::ALWAYS.set(false);
    crate::direct::DIRECT_ALWAYS.set(false);
    assert!(
        covered >= 40 || !crate::direct::direct_available(),
        "only {covered} cases ran the channel-vector kernel"
    );
}

/// The pointwise kernel against the reference that sums in its order, bit for bit: each
/// orientation forced and the shapes' own choice (the `gemm` crate for some of them, then
/// within the reference's tolerance); channel counts around the 8- and 16-channel blocks,
/// maps of 1 pixel to past a pixel tile, depth 0 to past a depth chunk, batch 2, bias or
/// none, Relu6, SiLU or no activation; sequentially and in pools of 1 and 2 threads, weights
/// packed once and per call. Outputs start as NaN, so an element never written fails.
#[test]
fn pointwise_matches_ordered_reference_bit_for_bit() {
    let cases = [
        (1, 5, 7, 7, 20),
        (2, 300, 7, 7, 33),
        (1, 130, 8, 8, 48),
        (1, 1, 1, 1, 16),
        (1, 0, 3, 3, 17),
        (1, 40, 14, 14, 24),
        (2, 17, 9, 13, 9),
        (1, 64, 30, 31, 19),
        (1, 700, 5, 6, 40),
        (1, 1000, 7, 7, 50),
        (1, 3, 50, 3, 8),
        (1, 16, 112, 112, 96),
    ];
    let mut rng = Rng::new(33);
    let acts = [
        None,
        Some(UnaryOp::Clip { lo: 0.0, hi: 6.0 }),
        Some(UnaryOp::Silu),
    ];
    let mut on_kernel = 0;
    for (i, &(n, c, h, w, m)) in cases.iter().enumerate() {
        let in_dims = [n, c, h, w];
        let w_dims = [m, c, 1, 1];
        let p = Conv2dParams::default();
        let input = rng.vec(n * c * h * w);
        let weight = rng.vec(m * c);
        let bias_v = rng.vec(m);
        let bias = (i % 2 == 0).then_some(bias_v.as_slice());
        let act = acts[i % 3];
        let len = n * m * h * w;
        let mut want = vec![0.0; len];
        let clamp = match act {
            Some(UnaryOp::Clip { lo, hi }) => Some((lo, hi)),
            _ => None,
        };
        r::conv2d_fma_ordered(&input, in_dims, &weight, w_dims, bias, &p, clamp, &mut want);
        if act == Some(UnaryOp::Silu) {
            crate::unary::apply_in_place(UnaryOp::Silu, &mut want);
        }
        for force in [0u8, 1, 2] {
            let name = format!("pointwise case {i} {in_dims:?} -> {m}, orientation {force}");
            let call = ConvCall {
                input: &input,
                in_dims,
                weight: &weight,
                w_dims,
                bias,
                p,
                act,
            };
            let got = check_packed_runs(&name, |par, once| {
                crate::pointwise::FORCE.set(force);
                let packed = PackedConvWeights::for_conv(&weight, in_dims, w_dims, &p);
                let got = call.run(packed.as_ref().filter(|_| once), par);
                crate::pointwise::FORCE.set(0);
                got
            });
            crate::pointwise::FORCE.set(force);
            let kernel = crate::pointwise::uses_pointwise(in_dims, w_dims, &p);
            crate::pointwise::FORCE.set(0);
            on_kernel += usize::from(kernel);
            if kernel {
                assert_same_bits(&name, &got, &want);
            } else {
                assert_close(&name, &got, &want, TOL_PER_TERM * (c + 1) as f32, 0.0);
            }
        }
    }
    assert!(
        on_kernel >= 2 * cases.len() || !crate::direct::direct_available(),
        "only {on_kernel} runs were on the pointwise kernel"
    );
}

/// Winograd F(4x4, 3x3) against an `f64` direct convolution: each output within
/// `TOL_WINOGRAD` of the sum of its terms' magnitudes (the transforms round differently
/// from a direct sum, and scale terms by up to 8 x 5 before the products), on shapes with
/// every pad from 0 to 2 (asymmetric too), maps narrower and wider than a 16-tile run and
/// not multiples of 4, blocks that start mid-row, batch > 1, depth 1 to 200, and more or fewer channels than a packed
/// block; in pools of 1 and 2 threads and sequentially, weights packed once and per call,
/// into NaN-filled outputs. The fused SiLU equals the convolution then SiLU bit for bit.
#[test]
fn winograd_matches_f64_reference() {
    let cases = [
        // n, c, h, w, m, pads [top, left, bottom, right]
        (1, 16, 52, 52, 24, [1, 1, 1, 1]),
        (2, 3, 13, 13, 17, [1, 1, 1, 1]),
        (1, 1, 7, 9, 2, [0, 0, 0, 0]),
        (1, 40, 9, 70, 33, [2, 0, 1, 2]),
        (1, 200, 6, 6, 48, [1, 1, 1, 1]),
        (1, 8, 1, 1, 16, [1, 1, 1, 1]),
        (3, 5, 30, 3, 9, [0, 1, 2, 1]),
        (1, 24, 104, 66, 20, [1, 1, 1, 1]),
        // Blocks that start mid-row (49 tiles: 25 + 24; 2 x 25 tiles in one block).
        (1, 24, 26, 26, 40, [1, 1, 1, 1]),
        (2, 32, 20, 18, 24, [1, 1, 1, 1]),
        // 100 tiles (F(4x4, 3x3); 400 with F(2x2, 3x3)): three blocks made four.
        (1, 32, 40, 40, 20, [1, 1, 1, 1]),
    ];
    let mut rng = Rng::new(44);
    let mut on_kernel = 0;
    for (i, &(n, c, h, w, m, pads)) in cases.iter().enumerate() {
        let in_dims = [n, c, h, w];
        let w_dims = [m, c, 3, 3];
        let p = Conv2dParams::new([1, 1], pads, [1, 1], 1);
        let od = conv2d_out_dims(in_dims, w_dims, &p);
        let input = rng.vec(n * c * h * w);
        let weight = rng.vec(m * c * 9);
        let bias_v = rng.vec(m);
        let bias = (i % 2 == 0).then_some(bias_v.as_slice());
        for force in [1u8, 3] {
            crate::winograd::FORCE.set(force);
            let kernel = crate::winograd::variant(in_dims, w_dims, &p).is_some();
            crate::winograd::FORCE.set(0);
            on_kernel += usize::from(kernel);
            // The f64 reference and, per output, the sum of its terms' magnitudes.
            let mut want = vec![0.0f64; want_len(od)];
            let mut scale = vec![0.0f64; want_len(od)];
            for ni in 0..n {
                for co in 0..m {
                    for oy in 0..od[2] {
                        for ox in 0..od[3] {
                            let (mut s, mut a) = (bias.map_or(0.0, |b| f64::from(b[co])), 0.0);
                            a += s.abs();
                            for ci in 0..c {
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let y = (oy + ky) as isize - pads[0] as isize;
                                        let x = (ox + kx) as isize - pads[1] as isize;
                                        if y < 0 || x < 0 || y as usize >= h || x as usize >= w {
                                            continue;
                                        }
                                        let xv = input
                                            [((ni * c + ci) * h + y as usize) * w + x as usize];
                                        let wv = weight[((co * c + ci) * 3 + ky) * 3 + kx];
                                        s += f64::from(xv) * f64::from(wv);
                                        a += (f64::from(xv) * f64::from(wv)).abs();
                                    }
                                }
                            }
                            let at = ((ni * m + co) * od[2] + oy) * od[3] + ox;
                            want[at] = s;
                            scale[at] = a;
                        }
                    }
                }
            }
            for act in [
                None,
                Some(UnaryOp::Clip { lo: 0.0, hi: 6.0 }),
                Some(UnaryOp::Silu),
            ] {
                let name =
                    format!("winograd {force} case {i} {in_dims:?} -> {m} pads {pads:?} {act:?}");
                let call = ConvCall {
                    input: &input,
                    in_dims,
                    weight: &weight,
                    w_dims,
                    bias,
                    p,
                    act,
                };
                let run = |act: Option<UnaryOp>, par, once| {
                    crate::winograd::FORCE.set(force);
                    let packed = PackedConvWeights::for_conv(&weight, in_dims, w_dims, &p);
                    let got = ConvCall { act, ..call }.run(packed.as_ref().filter(|_| once), par);
                    crate::winograd::FORCE.set(0);
                    got
                };
                let got = check_packed_runs(&name, |par, once| run(act, par, once));
                let mut worst = 0.0f64;
                for (j, &g) in got.iter().enumerate() {
                    let wv = match act {
                        Some(UnaryOp::Clip { lo, hi }) => {
                            want[j].clamp(f64::from(lo), f64::from(hi))
                        }
                        Some(UnaryOp::Silu) => continue,
                        _ => want[j],
                    };
                    let err = (f64::from(g) - wv).abs() / scale[j].max(f64::MIN_POSITIVE);
                    assert!(
                        err <= TOL_WINOGRAD,
                        "{name}: element {j}: got {g}, want {wv} (error {err:e} of the terms' magnitude)"
                    );
                    worst = worst.max(err);
                }
                if act == Some(UnaryOp::Silu) {
                    let mut plain = run(None, Parallelism::Sequential, true);
                    crate::unary::apply_in_place(UnaryOp::Silu, &mut plain);
                    assert_same_bits(&name, &got, &plain);
                }
                eprintln!("{name}: worst error {worst:e}");
            }
        }
    }
    assert!(
        on_kernel == 2 * cases.len() || !crate::direct::direct_available(),
        "only {on_kernel} cases were on the Winograd kernel"
    );
}

/// Integer weights (the int8 simulation's float form) keep a 3x3 layer that Winograd would
/// take on the direct kernel, whose sums of integer products are exact: the result equals
/// the ordered reference bit for bit, through both entry points.
#[test]
fn integer_weights_stay_exact() {
    let in_dims = [1, 32, 28, 28];
    let w_dims = [32, 32, 3, 3];
    let p = Conv2dParams::new([1, 1], [1, 1, 1, 1], [1, 1], 1);
    let mut rng = Rng::new(45);
    let input: Vec<f32> = rng
        .vec(32 * 28 * 28)
        .iter()
        .map(|v| (v * 127.0).round())
        .collect();
    let weight: Vec<f32> = rng
        .vec(32 * 32 * 9)
        .iter()
        .map(|v| (v * 127.0).round())
        .collect();
    assert!(
        crate::winograd::variant(in_dims, w_dims, &p).is_some()
            || !crate::direct::direct_available()
    );
    assert!(crate::winograd::takes(&weight, in_dims, w_dims, &p).is_none());
    let mut want = vec![0.0; 32 * 28 * 28];
    r::conv2d_fma_ordered(&input, in_dims, &weight, w_dims, None, &p, None, &mut want);
    let call = ConvCall {
        input: &input,
        in_dims,
        weight: &weight,
        w_dims,
        bias: None,
        p,
        act: None,
    };
    let got = check_packed_runs("integer weights", |par, once| {
        let packed = PackedConvWeights::for_conv(&weight, in_dims, w_dims, &p);
        call.run(packed.as_ref().filter(|_| once), par)
    });
    assert_same_bits("integer weights", &got, &want);
}

/// Outputs of a convolution of output dims `od`.
fn want_len(od: [usize; 4]) -> usize {
    od.iter().product()
}

/// The depthwise kernel against the f32 reference that sums in the same order, bit for
/// bit: random shapes (odd sizes, small maps with many channels so that tiles hold many
/// planes, batch > 1, strides, dilations, asymmetric pads), one and two threads, and on one
/// thread with the plane-by-plane path forced for small maps too (what CPUs without
/// AVX-512 run). The cases run one after another on the same threads, so the per-thread
/// scratch changes geometry between calls and is reused within one.
#[test]
fn depthwise_matches_ordered_reference_bit_for_bit() {
    let mut rng = Rng::new(21);
    let mut cases = vec![
        // (n, c, h, w, k, stride, dilation, pads): the MobileNetV2 / EfficientNet small maps.
        (1, 96, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 90, 7, 7, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2]),
        (2, 50, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0, 1, 1]),
        (1, 70, 14, 14, [5, 5], [2, 2], [1, 1], [1, 1, 2, 2]),
        (1, 3, 40, 37, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 2, 70, 66, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
        // Channel-blocked on larger maps (padded input up to 60x60): whole blocks of 16
        // channels and a partial one, rows that are not whole vectors.
        (1, 40, 45, 43, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (2, 33, 50, 50, [5, 5], [2, 2], [1, 1], [1, 2, 2, 1]),
        (1, 144, 56, 56, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        // Row by row (3x3, stride 1, above 60x60 padded): symmetric, asymmetric and no
        // padding, a map narrower than its padded rows.
        (1, 3, 70, 66, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (2, 2, 64, 70, [3, 3], [1, 1], [1, 1], [0, 1, 2, 0]),
        (1, 2, 66, 80, [3, 3], [1, 1], [1, 1], [0, 0, 0, 0]),
        (1, 1, 90, 40, [3, 3], [1, 1], [1, 1], [2, 2, 2, 2]),
    ];
    for _ in 0..40 {
        let k = [rng.range(1, 6), rng.range(1, 6)];
        let d = [rng.range(1, 2), rng.range(1, 2)];
        let s = [rng.range(1, 3), rng.range(1, 3)];
        let pads = [
            rng.range(0, 3),
            rng.range(0, 3),
            rng.range(0, 3),
            rng.range(0, 3),
        ];
        let h = rng.range(
            ((k[0] - 1) * d[0] + 1)
                .saturating_sub(pads[0] + pads[2])
                .max(1),
            20,
        );
        let w = rng.range(
            ((k[1] - 1) * d[1] + 1)
                .saturating_sub(pads[1] + pads[3])
                .max(1),
            20,
        );
        cases.push((rng.range(1, 3), rng.range(1, 40), h, w, k, s, d, pads));
    }
    for (threads, planes_only) in [(1, false), (2, false), (1, true)] {
        pool(threads).install(|| {
            crate::conv::DW_PLANES_ONLY.set(planes_only);
            for (i, &(n, c, h, w, k, s, d, pads)) in cases.iter().enumerate() {
                let p = Conv2dParams::new(s, pads, d, c);
                let in_dims = [n, c, h, w];
                let w_dims = [c, 1, k[0], k[1]];
                let x = rng.vec(n * c * h * w);
                let wt = rng.vec(c * k[0] * k[1]);
                let b = rng.vec(c);
                let bias = (i % 3 != 0).then_some(b.as_slice());
                let od = conv2d_out_dims(in_dims, w_dims, &p);
                let len = od.iter().product();
                let mut got = vec![f32::NAN; len];
                let mut want = vec![0.0; len];
                // Forcing the plane path is per thread: run on this one.
                let par = if planes_only {
                    Parallelism::Sequential
                } else {
                    Parallelism::Rayon
                };
                conv2d(&x, in_dims, &wt, w_dims, bias, &p, &mut got, par);
                r::depthwise_conv2d_f32(&x, in_dims, &wt, k, bias, &p, &mut want);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "depthwise case {i} ({threads} threads, planes only {planes_only}): \
                     {in_dims:?} k {k:?} {p:?}"
                );
            }
            crate::conv::DW_PLANES_ONLY.set(false);
        });
    }
}

#[test]
fn strided_copy_matches_indexing() {
    for stride in 1..4 {
        for n in 0..70 {
            let src: Vec<f32> = (0..(n.max(1) - 1) * stride + 1).map(|i| i as f32).collect();
            let mut dst = vec![-1.0; n];
            crate::conv::strided_copy(&mut dst, &src, stride);
            for (i, v) in dst.iter().enumerate() {
                assert_eq!(*v, (i * stride) as f32, "stride {stride} n {n} element {i}");
            }
        }
    }
}

#[test]
fn conv2d_fused_equals_conv_then_unary() {
    let mut rng = Rng::new(15);
    for cs in [
        conv_case(1, 8, 9, 9, 16, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 8, 9, 9, 16, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(2, 6, 9, 10, 6, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 6),
        // Depthwise maps above 28x28 run plane by plane (activation applied per plane).
        conv_case(1, 5, 40, 37, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 5),
        conv_case(1, 4, 41, 38, 4, [3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 4),
        // 3x3 stride-1 depthwise above 60x60 padded runs row by row (clamps fused).
        conv_case(1, 5, 70, 66, 5, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 5),
    ] {
        // The portable depthwise loops too (forced on this thread, so sequential).
        for (act, portable) in [
            (UnaryOp::Clip { lo: 0.0, hi: 6.0 }, false),
            (UnaryOp::Silu, false),
            (UnaryOp::Relu, false),
            (UnaryOp::Clip { lo: -0.3, hi: 0.4 }, true),
            (UnaryOp::Relu, true),
        ] {
            crate::conv::DW_PLANES_ONLY.set(portable);
            let par = if portable {
                Parallelism::Sequential
            } else {
                Parallelism::Rayon
            };
            let x = rng.vec(cs.in_dims.iter().product());
            let w = rng.vec(cs.w_dims.iter().product());
            let b = rng.vec(cs.w_dims[0]);
            let n: usize = conv2d_out_dims(cs.in_dims, cs.w_dims, &cs.p)
                .iter()
                .product();
            let (mut fused, mut plain) = (vec![0.0; n], vec![0.0; n]);
            conv2d_fused(
                &x,
                cs.in_dims,
                &w,
                cs.w_dims,
                Some(&b),
                &cs.p,
                Some(act),
                &mut fused,
                par,
            );
            conv2d(
                &x,
                cs.in_dims,
                &w,
                cs.w_dims,
                Some(&b),
                &cs.p,
                &mut plain,
                par,
            );
            crate::conv::DW_PLANES_ONLY.set(false);
            unary(act, &mut plain, Parallelism::Sequential);
            assert_eq!(
                bits(&fused),
                bits(&plain),
                "fused {act:?} {:?} portable {portable}",
                cs.w_dims
            );
        }
    }
}

#[test]
fn conv_transpose2d_matches_reference() {
    let mut rng = Rng::new(5);
    let mut cases = vec![
        (
            [1, 4, 5, 5],
            [4, 3, 3, 3],
            ConvTranspose2dParams::new([2, 2], [1, 1, 1, 1], [1, 1], 1, [1, 1]),
        ),
        (
            [2, 6, 4, 3],
            [6, 2, 2, 2],
            ConvTranspose2dParams::new([2, 2], [0; 4], [1, 1], 3, [0, 0]),
        ),
        (
            [1, 3, 6, 7],
            [3, 20, 3, 1],
            ConvTranspose2dParams::new([1, 3], [0, 1, 2, 0], [2, 1], 1, [0, 2]),
        ),
        (
            [1, 2, 1, 1],
            [2, 2, 4, 4],
            ConvTranspose2dParams::new([1, 1], [0; 4], [1, 1], 1, [0, 0]),
        ),
    ];
    for _ in 0..15 {
        let g = rng.range(1, 2);
        let k = [rng.range(1, 4), rng.range(1, 4)];
        let s = [rng.range(1, 3), rng.range(1, 3)];
        let d = [rng.range(1, 2), rng.range(1, 2)];
        let op = [rng.range(0, s[0] - 1), rng.range(0, s[1] - 1)];
        let pads = [
            rng.range(0, k[0] - 1),
            rng.range(0, k[1] - 1),
            rng.range(0, k[0] - 1),
            rng.range(0, k[1] - 1),
        ];
        cases.push((
            [
                rng.range(1, 2),
                g * rng.range(1, 3),
                rng.range(1, 7),
                rng.range(1, 7),
            ],
            [0, rng.range(1, 4), k[0], k[1]],
            ConvTranspose2dParams::new(s, pads, d, g, op),
        ));
    }
    for (i, (in_dims, mut w_dims, p)) in cases.into_iter().enumerate() {
        w_dims[0] = in_dims[1];
        let input = rng.vec(in_dims.iter().product());
        let weight = rng.vec(w_dims.iter().product());
        let bias = rng.vec(w_dims[1] * p.group);
        let od = conv_transpose2d_out_dims(in_dims, w_dims, &p);
        let mut got = vec![f32::NAN; od.iter().product()];
        let mut want = vec![0.0; got.len()];
        conv_transpose2d(
            &input,
            in_dims,
            &weight,
            w_dims,
            Some(&bias),
            &p,
            &mut got,
            Parallelism::Rayon,
        );
        r::conv_transpose2d(&input, in_dims, &weight, w_dims, Some(&bias), &p, &mut want);
        let terms = in_dims[1] * w_dims[2] * w_dims[3] + 1;
        assert_close(
            &format!("conv_transpose case {i}"),
            &got,
            &want,
            TOL_PER_TERM * terms as f32,
            0.0,
        );
    }
}

// ---------------------------------------------------------------- pooling, norm

#[test]
fn pools_match_reference() {
    let mut rng = Rng::new(6);
    let mut cases = vec![
        (
            [1, 2, 7, 7],
            Pool2dParams::new([3, 3]).strides([2, 2]).pads([1, 1, 1, 1]),
        ),
        (
            [2, 3, 8, 9],
            Pool2dParams::new([2, 2]).strides([2, 2]).ceil_mode(true),
        ),
        (
            [1, 1, 5, 6],
            Pool2dParams::new([3, 2])
                .strides([2, 3])
                .pads([0, 1, 2, 1])
                .ceil_mode(true)
                .count_include_pad(true),
        ),
        (
            [1, 2, 9, 9],
            Pool2dParams::new([3, 3])
                .dilations([2, 2])
                .pads([1, 1, 1, 1]),
        ),
        (
            [1, 2, 4, 4],
            Pool2dParams::new([5, 5])
                .pads([2, 2, 2, 2])
                .count_include_pad(true),
        ),
    ];
    for _ in 0..20 {
        let k = [rng.range(1, 4), rng.range(1, 4)];
        let p = Pool2dParams::new(k)
            .strides([rng.range(1, 3), rng.range(1, 3)])
            .pads([
                rng.range(0, k[0] - 1),
                rng.range(0, k[1] - 1),
                rng.range(0, k[0] - 1),
                rng.range(0, k[1] - 1),
            ])
            .dilations([rng.range(1, 2), rng.range(1, 2)])
            .ceil_mode(rng.range(0, 1) == 1)
            .count_include_pad(rng.range(0, 1) == 1);
        cases.push((
            [
                rng.range(1, 2),
                rng.range(1, 3),
                rng.range(7, 12),
                rng.range(7, 12),
            ],
            p,
        ));
    }
    for (i, (dims, p)) in cases.iter().enumerate() {
        let input = rng.vec(dims.iter().product());
        let od = pool2d_out_dims(*dims, p);
        let n: usize = od.iter().product();
        let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
        max_pool2d(&input, *dims, p, &mut got, Parallelism::Rayon);
        r::max_pool2d(&input, *dims, p, &mut want);
        assert_close(&format!("max_pool case {i} {p:?}"), &got, &want, 0.0, 0.0);
        avg_pool2d(&input, *dims, p, &mut got, Parallelism::Rayon);
        r::avg_pool2d(&input, *dims, p, &mut want);
        assert_close(
            &format!("avg_pool case {i} {p:?}"),
            &got,
            &want,
            TOL_PER_TERM * 16.0,
            0.0,
        );
    }
    let dims = [2, 3, 7, 9];
    let input = rng.vec(dims.iter().product());
    let (mut got, mut want) = (vec![0.0; 6], vec![0.0; 6]);
    global_avg_pool(&input, dims, &mut got, Parallelism::Rayon);
    r::global_avg_pool(&input, dims, &mut want);
    assert_close("global_avg_pool", &got, &want, TOL_PER_TERM * 4.0, 0.0);
    global_max_pool(&input, dims, &mut got, Parallelism::Sequential);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(
            *v,
            input[i * 63..(i + 1) * 63]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
        );
    }
}

#[test]
fn batch_norm_and_softmax_match_reference() {
    let mut rng = Rng::new(7);
    let dims = [2, 5, 3, 4];
    let x = rng.vec(120);
    let (scale, bias, mean) = (rng.vec(5), rng.vec(5), rng.vec(5));
    let var: Vec<f32> = rng.vec(5).iter().map(|v| v.abs() + 0.1).collect();
    let (mut got, mut want) = (vec![0.0; 120], vec![0.0; 120]);
    batch_norm(&x, &dims, &scale, &bias, &mean, &var, 1e-5, &mut got);
    r::batch_norm(&x, &dims, &scale, &bias, &mean, &var, 1e-5, &mut want);
    assert_close(
        "batch_norm",
        &got,
        &want,
        TOL_ELEMENTWISE_ABS * 10.0,
        TOL_ELEMENTWISE_REL,
    );
    for axis in 0..4 {
        let mut got: Vec<f32> = x.iter().map(|v| v * 30.0).collect();
        let mut want = got.clone();
        softmax(&mut got, &dims, axis, Parallelism::Sequential);
        r::softmax(&mut want, &dims, axis);
        assert_close(
            &format!("softmax axis {axis}"),
            &got,
            &want,
            TOL_ELEMENTWISE_ABS,
            TOL_ELEMENTWISE_REL,
        );
    }
}

// ---------------------------------------------------------------- elementwise

#[test]
fn unary_ops_match_reference() {
    let mut rng = Rng::new(8);
    let ops = [
        UnaryOp::Relu,
        UnaryOp::Clip { lo: -0.3, hi: 0.6 },
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Sigmoid,
        UnaryOp::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        UnaryOp::HardSwish,
        UnaryOp::Erf,
        UnaryOp::Gelu,
        UnaryOp::Sqrt,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Tanh,
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Reciprocal,
        UnaryOp::Elu { alpha: 1.3 },
        UnaryOp::Softplus,
        UnaryOp::Silu,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ];
    let mut x: Vec<f32> = (0..40_001).map(|_| rng.f() * 8.0).collect();
    x.extend([0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 6.0, -6.0, 3.0, -3.0]);
    for op in ops {
        let mut got = x.clone();
        let mut want = x.clone();
        unary(op, &mut got, Parallelism::Rayon);
        r::unary(op, &mut want);
        // Out of place: the same bits as in place, whatever the threads.
        for par in [Parallelism::Sequential, Parallelism::Rayon] {
            let mut out = vec![std::mem::MaybeUninit::uninit(); x.len()];
            unary_into(op, &x, &mut out, par);
            // SAFETY: `unary_into` writes every element.
            let out: Vec<f32> = out
                .into_iter()
                .map(|v| unsafe { v.assume_init() })
                .collect();
            assert!(
                out.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{op:?} unary_into differs from unary"
            );
        }
        // Exp and Softplus map [-8, 8] to values with larger ulps; compare relatively.
        assert_close(
            &format!("{op:?}"),
            &got,
            &want,
            TOL_ELEMENTWISE_ABS,
            TOL_ELEMENTWISE_REL,
        );
    }
    let mut nan = vec![f32::NAN; 3];
    unary(UnaryOp::Relu, &mut nan, Parallelism::Sequential);
    assert!(nan.iter().all(|v| v.is_nan()), "relu must propagate NaN");
}

#[test]
fn approximations_are_within_1e6_relative() {
    // Dense sweep: every 2^-10 step over the range where results are normal floats.
    let mut worst = [0.0f64; 3];
    let mut x = -80.0f32;
    while x <= 80.0 {
        let xd = f64::from(x);
        let s = f64::from(crate::simd::sigmoid_approx(x));
        let sw = 1.0 / (1.0 + (-xd).exp());
        worst[0] = worst[0].max(((s - sw) / sw).abs());
        if x < 88.0 && x > -87.0 {
            let e = f64::from(crate::simd::exp_approx(x));
            worst[1] = worst[1].max(((e - xd.exp()) / xd.exp()).abs());
        }
        let erf = f64::from(crate::simd::erf_f64(xd) as f32);
        let ew = r::erf_taylor(xd);
        if ew != 0.0 {
            worst[2] = worst[2].max(((erf - ew) / ew).abs());
        }
        x += 1.0 / 1024.0;
    }
    // Small arguments, where erf(x) ~ 2x/sqrt(pi) and relative error matters most.
    for i in 1..2000 {
        let xd = f64::from(1e-7f32 * i as f32);
        let erf = f64::from(crate::simd::erf_f64(xd) as f32);
        worst[2] = worst[2].max(((erf - r::erf_taylor(xd)) / r::erf_taylor(xd)).abs());
    }
    assert!(
        worst.iter().all(|&w| w <= TOL_APPROX_REL),
        "worst relative errors sigmoid/exp/erf: {worst:?}"
    );
}

#[test]
fn binary_ops_match_reference() {
    let mut rng = Rng::new(9);
    let shapes: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[]),
        (&[], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1]),
        (&[1, 3, 1, 1], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[5]),
        (&[2, 3, 4, 1], &[1, 1, 1, 5]),
        (&[3, 1, 5], &[2, 1, 4, 1]),
        (&[2, 1, 4, 5], &[3, 1, 1]),
        (&[1], &[1]),
        (&[7, 1], &[7, 3000]),
        (&[4, 0, 3], &[1, 3]),
    ];
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        for (ad, bd) in shapes {
            let a: Vec<f32> = rng
                .vec(ad.iter().product())
                .iter()
                .map(|v| {
                    if op == BinaryOp::Pow {
                        v.abs() + 0.1
                    } else {
                        *v
                    }
                })
                .collect();
            let b = rng.vec(bd.iter().product());
            let od = broadcast_shape(ad, bd).expect("test shapes broadcast");
            let n = od.iter().product();
            let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
            binary(op, &a, ad, &b, bd, &mut got, Parallelism::Rayon);
            r::binary(op, &a, ad, &b, bd, &mut want);
            assert_close(&format!("{op:?} {ad:?} {bd:?}"), &got, &want, 0.0, 0.0);
        }
    }
    // Pow with a scalar exponent of 2 takes the a * a shortcut.
    let a = rng.vec(100);
    let mut got = vec![0.0; 100];
    binary(
        BinaryOp::Pow,
        &a,
        &[100],
        &[2.0],
        &[1],
        &mut got,
        Parallelism::Sequential,
    );
    for (g, x) in got.iter().zip(&a) {
        assert_eq!(*g, x * x);
    }
    assert_eq!(broadcast_shape(&[2, 3], &[4, 3]), None);
    assert_eq!(broadcast_shape(&[5, 1, 3], &[4, 1]), Some(vec![5, 4, 3]));
}

// ---------------------------------------------------------------- data movement

#[test]
fn transpose_matches_reference() {
    let mut rng = Rng::new(10);
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4, 5], &[0, 2, 3, 1]),
        (&[2, 3, 4, 5], &[0, 3, 1, 2]),
        (&[2, 3, 4, 5], &[3, 2, 1, 0]),
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[37, 45], &[1, 0]),
        (&[2, 1, 3], &[2, 1, 0]),
        (&[4, 6, 2, 3, 2], &[1, 0, 3, 2, 4]),
        (&[], &[]),
    ];
    for (dims, perm) in cases {
        let x: Vec<u32> = (0..dims.iter().product::<usize>())
            .map(|_| rng.next_u64() as u32)
            .collect();
        let (mut got, mut want) = (vec![0u32; x.len()], vec![0u32; x.len()]);
        transpose(&x, dims, perm, &mut got);
        r::transpose(&x, dims, perm, &mut want);
        assert_eq!(got, want, "transpose {dims:?} {perm:?}");
    }
}

#[test]
fn slice_concat_gather_expand_where_match_reference() {
    let mut rng = Rng::new(11);
    let dims = [3, 4, 5];
    let x: Vec<i64> = (0..60).collect();
    for (starts, steps, od) in [
        ([0, 0, 0], [1, 1, 1], [3, 4, 5]),
        ([1, 3, 4], [1, -1, -2], [2, 2, 3]),
        ([2, 0, 1], [-2, 3, 2], [2, 2, 2]),
        ([0, 1, 0], [1, 1, 1], [3, 0, 5]),
    ] {
        let n: usize = od.iter().product();
        let (mut got, mut want) = (vec![0; n], vec![0; n]);
        slice(&x, &dims, &starts, &steps, &od, &mut got);
        r::slice(&x, &dims, &starts, &steps, &od, &mut want);
        assert_eq!(got, want, "slice {starts:?} {steps:?}");
    }
    let mut scalar = [0i64];
    slice(&[7i64], &[], &[], &[], &[], &mut scalar);
    assert_eq!(scalar, [7], "slice of a scalar");
    let a: Vec<f32> = rng.vec(2 * 3 * 4);
    let b: Vec<f32> = rng.vec(2 * 4);
    let c: Vec<f32> = rng.vec(2 * 5 * 4);
    let inputs: [(&[f32], &[usize]); 3] = [(&a, &[2, 3, 4]), (&b, &[2, 1, 4]), (&c, &[2, 5, 4])];
    let (mut got, mut want) = (vec![0.0; 72], vec![0.0; 72]);
    concat(&inputs, 1, &mut got);
    r::concat(&inputs, 1, &mut want);
    assert_eq!(got, want, "concat");
    for axis in 0..3 {
        let idx = [2usize, 0, 2, 1];
        let idx = &idx[..idx.len().min(dims[axis] + 1)];
        let idx: Vec<usize> = idx.iter().map(|&i| i % dims[axis]).collect();
        let n = 60 / dims[axis] * idx.len();
        let (mut got, mut want) = (vec![0; n], vec![0; n]);
        gather(&x, &dims, axis, &idx, &mut got);
        r::gather(&x, &dims, axis, &idx, &mut want);
        assert_eq!(got, want, "gather axis {axis}");
    }
    for (d, od) in [
        (&[3usize, 1][..], &[2usize, 3, 4][..]),
        (&[1], &[5]),
        (&[4], &[3, 4]),
        (&[2, 1, 1], &[2, 3, 1]),
    ] {
        let src: Vec<f32> = rng.vec(d.iter().product());
        let n = od.iter().product();
        let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
        expand(&src, d, od, &mut got);
        r::expand(&src, d, od, &mut want);
        assert_eq!(got, want, "expand {d:?} {od:?}");
    }
    let cond: Vec<bool> = (0..12).map(|_| rng.next_u64().is_multiple_of(2)).collect();
    let xs = rng.vec(4);
    let ys = rng.vec(3);
    let (mut got, mut want) = (vec![0.0; 12], vec![0.0; 12]);
    where_select(&cond, &[2, 3, 2], &xs, &[2, 1, 2], &ys, &[3, 1], &mut got);
    r::where_select(&cond, &[2, 3, 2], &xs, &[2, 1, 2], &ys, &[3, 1], &mut want);
    assert_eq!(got, want, "where_select");
}

#[test]
fn resize_matches_reference() {
    let mut rng = Rng::new(12);
    let modes = [
        CoordinateTransformMode::HalfPixel,
        CoordinateTransformMode::Asymmetric,
        CoordinateTransformMode::AlignCorners,
        CoordinateTransformMode::PytorchHalfPixel,
    ];
    let nearest = [
        NearestMode::Floor,
        NearestMode::Ceil,
        NearestMode::RoundPreferFloor,
        NearestMode::RoundPreferCeil,
    ];
    for (in_dims, out_hw) in [
        ([1, 2, 4, 5], [8, 10]),
        ([2, 1, 7, 3], [3, 9]),
        ([1, 1, 5, 5], [1, 1]),
        ([1, 3, 6, 6], [13, 4]),
    ] {
        let x = rng.vec(in_dims.iter().product());
        let n = in_dims[0] * in_dims[1] * out_hw[0] * out_hw[1];
        let scales = resize_scales(in_dims, out_hw);
        for mode in modes {
            for nm in nearest {
                let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
                resize_nearest(
                    &x,
                    in_dims,
                    out_hw,
                    scales,
                    mode,
                    nm,
                    &mut got,
                    Parallelism::Rayon,
                );
                r::resize_nearest(&x, in_dims, out_hw, scales, mode, nm, &mut want);
                assert_eq!(got, want, "resize_nearest {mode:?} {nm:?}");
            }
            let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
            resize_linear(
                &x,
                in_dims,
                out_hw,
                scales,
                mode,
                &mut got,
                Parallelism::Rayon,
            );
            r::resize_linear(&x, in_dims, out_hw, scales, mode, &mut want);
            assert_close(
                &format!("resize_linear {mode:?}"),
                &got,
                &want,
                TOL_RESIZE,
                0.0,
            );
        }
    }
    // Upsample x2 with asymmetric + floor is plain repetition.
    let x = [1.0, 2.0, 3.0, 4.0];
    let mut o = [0.0; 16];
    resize_nearest(
        &x,
        [1, 1, 2, 2],
        [4, 4],
        [2.0, 2.0],
        CoordinateTransformMode::Asymmetric,
        NearestMode::Floor,
        &mut o,
        Parallelism::Sequential,
    );
    assert_eq!(
        o,
        [
            1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0
        ]
    );
}

#[test]
fn reduce_matches_reference() {
    let mut rng = Rng::new(13);
    let dims = [2, 3, 4, 5];
    let x = rng.vec(120);
    for op in [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
        ReduceOp::L1,
        ReduceOp::L2,
        ReduceOp::SumSquare,
    ] {
        for axes in [
            &[][..],
            &[0],
            &[1],
            &[3],
            &[2, 3],
            &[0, 2],
            &[1, 3],
            &[0, 1, 2, 3],
        ] {
            let n: usize = reduce_out_dims(&dims, axes).iter().product();
            let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
            reduce(op, &x, &dims, axes, &mut got);
            r::reduce(op, &x, &dims, axes, &mut want);
            assert_close(
                &format!("reduce {op:?} {axes:?}"),
                &got,
                &want,
                TOL_PER_TERM * 120.0,
                TOL_ELEMENTWISE_REL,
            );
        }
    }
    let mut o = [0.0];
    reduce(ReduceOp::Max, &[1.0, f32::NAN, 3.0], &[3], &[0], &mut o);
    assert!(o[0].is_nan(), "ReduceMax propagates NaN");
}

// ---------------------------------------------------------------- pointwise + depthwise

#[test]
fn pointwise_depthwise_equals_two_convolutions_bit_for_bit() {
    let mut rng = Rng::new(21);
    let relu6 = Some(UnaryOp::Clip { lo: 0.0, hi: 6.0 });
    // (n, c, h, w, m, k, stride, pads, pointwise activation, depthwise activation)
    let cases = [
        (1, 16, 64, 64, 50, 3, 2, [0, 0, 1, 1], relu6, relu6),
        (1, 24, 30, 30, 144, 3, 1, [1, 1, 1, 1], relu6, None),
        (
            2,
            3,
            19,
            23,
            13,
            5,
            2,
            [2, 2, 2, 2],
            Some(UnaryOp::Silu),
            Some(UnaryOp::Silu),
        ),
        (
            1,
            96,
            14,
            14,
            7,
            3,
            1,
            [1, 1, 1, 1],
            None,
            Some(UnaryOp::HardSwish),
        ),
        (1, 512, 8, 9, 20, 3, 2, [1, 1, 1, 1], relu6, relu6),
        (1, 1, 5, 5, 4, 3, 1, [0; 4], None, None),
        // Plane path (maps above 28x28), stride 2 with both pad parities, Relu.
        (
            1,
            8,
            45,
            33,
            12,
            3,
            2,
            [1, 1, 1, 1],
            Some(UnaryOp::Relu),
            relu6,
        ),
        (
            1,
            8,
            31,
            40,
            12,
            3,
            2,
            [0, 1, 1, 0],
            relu6,
            Some(UnaryOp::Relu),
        ),
        // A 1x1 depthwise at stride 2 never reads the odd rows and columns.
        (1, 6, 40, 41, 9, 1, 2, [0; 4], relu6, None),
        // MobileNetV2's 56x56 expansion pair (channel-blocked depthwise).
        (1, 24, 56, 56, 144, 3, 1, [1, 1, 1, 1], relu6, relu6),
        // Stride 1 with a 5x5 window and odd padding.
        (
            1,
            7,
            36,
            30,
            10,
            5,
            1,
            [2, 1, 2, 3],
            Some(UnaryOp::Silu),
            relu6,
        ),
    ];
    let cases = cases
        .iter()
        .flat_map(|&cs| [(cs, true, false), (cs, false, false), (cs, true, true)]);
    for (i, ((n, c, h, w, m, k, s, pads, pw_act, dw_act), with_pw_bias, planes_only)) in
        cases.enumerate()
    {
        let x = rng.vec(n * c * h * w);
        let w1 = rng.vec(m * c);
        let b1 = rng.vec(m);
        let pw_b = with_pw_bias.then_some(b1.as_slice());
        let w2 = rng.vec(m * k * k);
        let b2 = rng.vec(m);
        let pw_p = Conv2dParams::default();
        let dw_p = Conv2dParams::new([s, s], pads, [1, 1], m);
        let dw_dims = [m, 1, k, k];
        let od = conv2d_out_dims([n, m, h, w], dw_dims, &dw_p);
        let want = pool(2).install(|| {
            let mut mid = vec![0.0; n * m * h * w];
            conv2d_fused(
                &x,
                [n, c, h, w],
                &w1,
                [m, c, 1, 1],
                pw_b,
                &pw_p,
                pw_act,
                &mut mid,
                Parallelism::Rayon,
            );
            let mut o = vec![0.0; od.iter().product()];
            conv2d_fused(
                &mid,
                [n, m, h, w],
                &w2,
                dw_dims,
                Some(&b2),
                &dw_p,
                dw_act,
                &mut o,
                Parallelism::Rayon,
            );
            o
        });
        let fused = |par| {
            // Forcing the plane path is per thread; the kernel decides on the calling one.
            crate::conv::DW_PLANES_ONLY.set(planes_only);
            let mut o = vec![f32::NAN; od.iter().product()];
            conv2d_pointwise_depthwise(
                &x,
                [n, c, h, w],
                &w1,
                pw_b,
                pw_act,
                &w2,
                dw_dims,
                Some(&b2),
                &dw_p,
                dw_act,
                &mut o,
                par,
            );
            crate::conv::DW_PLANES_ONLY.set(false);
            o
        };
        let name = format!(
            "pointwise+depthwise case {i} (pointwise bias {with_pw_bias}, planes only {planes_only})"
        );
        check_deterministic(&name, fused);
        assert!(
            bits(&fused(Parallelism::Sequential)) == bits(&want),
            "{name}: fused result differs from the two convolutions"
        );
    }
}

// ---------------------------------------------------------------- determinism

/// Runs `f` in rayon pools of 1 and 2 threads and sequentially; all must agree bit for bit.
pub(crate) fn check_deterministic(name: &str, f: impl Fn(Parallelism) -> Vec<f32> + Sync) {
    let seq = bits(&f(Parallelism::Sequential));
    let one = pool(1).install(|| bits(&f(Parallelism::Rayon)));
    let two = pool(2).install(|| bits(&f(Parallelism::Rayon)));
    assert!(
        seq == one && one == two,
        "{name}: results depend on the thread count"
    );
}

#[test]
fn kernels_are_bit_identical_across_thread_counts() {
    let mut rng = Rng::new(14);
    let (m, k, n) = (300, 200, 700);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    check_deterministic("gemm", |par| {
        let mut c = vec![0.0; m * n];
        gemm(m, k, n, &a, false, &b, false, &mut c, false, par);
        c
    });
    for cs in [
        conv_case(2, 32, 30, 30, 300, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        conv_case(1, 64, 20, 20, 320, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(2, 48, 33, 31, 48, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 48),
        conv_case(1, 16, 12, 12, 8, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        // Channel tiles of 20 on a 7x7 map (1x1) and of 36 on a 14x14 map (3x3).
        conv_case(1, 320, 7, 7, 160, [1, 1], [1, 1], [0; 4], [1, 1], 1),
        conv_case(1, 64, 14, 14, 144, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        // Depthwise under 1 MFLOP that is still spread over threads (many small planes),
        // stride 1 and 2.
        conv_case(1, 300, 7, 7, 300, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 300),
        conv_case(
            1,
            200,
            14,
            14,
            200,
            [3, 3],
            [2, 2],
            [0, 0, 1, 1],
            [1, 1],
            200,
        ),
    ] {
        let x = rng.vec(cs.in_dims.iter().product());
        let w = rng.vec(cs.w_dims.iter().product());
        let bias = rng.vec(cs.w_dims[0]);
        let od = conv2d_out_dims(cs.in_dims, cs.w_dims, &cs.p);
        check_deterministic("conv2d", |par| {
            let mut o = vec![0.0; od.iter().product()];
            conv2d(
                &x,
                cs.in_dims,
                &w,
                cs.w_dims,
                Some(&bias),
                &cs.p,
                &mut o,
                par,
            );
            o
        });
    }
    let x = rng.vec(100_000);
    check_deterministic("sigmoid", |par| {
        let mut v = x.clone();
        unary(UnaryOp::Sigmoid, &mut v, par);
        v
    });
    let c = rng.vec(40);
    check_deterministic("binary", |par| {
        let mut o = vec![0.0; 100_000];
        binary(
            BinaryOp::Mul,
            &x,
            &[1, 40, 50, 50],
            &c,
            &[40, 1, 1],
            &mut o,
            par,
        );
        o
    });
    let ct_p = ConvTranspose2dParams::new([2, 2], [0; 4], [1, 1], 1, [0, 0]);
    let xi = rng.vec(2 * 16 * 9 * 9);
    let wt = rng.vec(16 * 40 * 2 * 2);
    check_deterministic("conv_transpose2d", |par| {
        let mut o = vec![0.0; 2 * 40 * 18 * 18];
        conv_transpose2d(
            &xi,
            [2, 16, 9, 9],
            &wt,
            [16, 40, 2, 2],
            None,
            &ct_p,
            &mut o,
            par,
        );
        o
    });
}

/// The vectorisable erf against the f64 series: absolute error below 3e-7
/// everywhere (A&S 7.1.26's 1.5e-7 plus f32 rounding near 1, whose ulp is
/// 1.2e-7), relative error below 1e-6 where |erf| >= 1e-3.
#[test]
fn erf_approx_is_accurate() {
    let mut worst_abs = 0f64;
    let mut worst_rel = 0f64;
    let mut x = -6.0f32;
    while x <= 6.0 {
        let got = f64::from(crate::simd::erf_approx(x));
        let want = crate::simd::erf_f64(f64::from(x));
        let abs = (got - want).abs();
        worst_abs = worst_abs.max(abs);
        if want.abs() >= 1e-3 {
            worst_rel = worst_rel.max(abs / want.abs());
        }
        x += 1.0 / 4096.0;
    }
    assert!(worst_abs < 3e-7, "max abs error {worst_abs:e}");
    assert!(worst_rel < 1e-6, "max rel error {worst_rel:e}");
    assert!(crate::simd::erf_approx(f32::NAN).is_nan());
}

/// The one-pass bias + activation epilogue of the convolution tiles equals the bias loop
/// followed by the activation, bit for bit, on edge values (NaN, -0, infinities).
#[test]
fn bias_then_activation_is_one_pass_of_the_same_bits() {
    let xs = [
        -3.5f32,
        -0.0,
        0.0,
        0.25,
        5.999_999,
        6.0,
        7.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
    ];
    let acts = [
        None,
        Some(UnaryOp::Relu),
        Some(UnaryOp::Clip { lo: 0.0, hi: 6.0 }),
        Some(UnaryOp::Clip {
            lo: f32::NEG_INFINITY,
            hi: 1.0,
        }),
        Some(UnaryOp::Silu),
        Some(UnaryOp::HardSwish),
    ];
    for bias in [0.0f32, -0.0, 1.5, -2.0, f32::NAN] {
        for act in acts {
            // 37 elements: whole vectors and a tail.
            let x: Vec<f32> = (0..37).map(|i| xs[i % xs.len()]).collect();
            let mut want = x.clone();
            for v in want.iter_mut() {
                *v += bias;
            }
            if let Some(op) = act {
                crate::unary::apply_in_place(op, &mut want);
            }
            let mut got = x;
            crate::unary::add_bias_then_apply(&mut got, bias, act);
            assert_eq!(bits(&got), bits(&want), "bias {bias} act {act:?}");
        }
    }
}
