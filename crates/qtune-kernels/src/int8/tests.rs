//! Differential tests: the VNNI and portable paths against the scalar
//! reference, on odd shapes, both input types, every output form, and 1 and
//! 2 threads; and the output stage against qtune's float kernels.

use super::reference::{conv2d_int8_reference, matmul_int8_reference};
use super::*;
use crate::{BinaryOp, UnaryOp, binary, quantize_linear_u8, unary};

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[3]
    }
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        let span = u64::try_from(hi - lo + 1).expect("hi >= lo");
        lo + i32::try_from(self.next() % span).expect("small")
    }
    fn unit(&mut self) -> f32 {
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        v
    }
}

/// Input codes of one type with a zero point.
#[derive(Clone)]
enum Codes {
    U8(Vec<u8>, i32),
    I8(Vec<i8>, i32),
}

impl Codes {
    fn random(rng: &mut Rng, len: usize, signed: bool, extreme: bool) -> Codes {
        let bytes: Vec<u8> = (0..len)
            .map(|_| if extreme { 255 } else { rng.byte() })
            .collect();
        if signed {
            let zp = rng.int(-20, 20);
            Codes::I8(bytes.iter().map(|&b| b.cast_signed()).collect(), zp)
        } else {
            let zp = if extreme { 0 } else { rng.int(0, 255) };
            Codes::U8(bytes, zp)
        }
    }
    fn input(&self) -> (Int8In<'_>, i32) {
        match self {
            Codes::U8(v, z) => (Int8In::U8(v), *z),
            Codes::I8(v, z) => (Int8In::I8(v), *z),
        }
    }
}

/// The three output forms, with buffers for the fast and reference runs.
#[derive(Clone, Copy, Debug)]
enum Form {
    F32,
    U8Relu6,
    I8,
}

fn stage_for(
    form: Form,
    scale: &[f32],
    bias: Option<&[i32]>,
    rng: &mut Rng,
) -> OutputStage<'static> {
    let scale: &'static [f32] = Box::leak(scale.to_vec().into_boxed_slice());
    let bias: Option<&'static [i32]> = bias.map(|b| &*Box::leak(b.to_vec().into_boxed_slice()));
    let tail = match form {
        Form::F32 => None,
        Form::U8Relu6 => Some(QuantTail {
            clamp: Some((0.0, 6.0)),
            scale: 0.02 + rng.unit() * 0.05,
            zero_point: 0,
            range: QRange::U8,
        }),
        Form::I8 => Some(QuantTail {
            clamp: None,
            scale: 1.0,
            zero_point: rng.int(-3, 3),
            range: QRange::I8,
        }),
    };
    OutputStage { bias, scale, tail }
}

/// Runs `f` on an output buffer of `len` elements of `form` and returns
/// the bits of every element.
fn run_into(form: Form, len: usize, f: impl FnOnce(Int8Out)) -> Vec<u32> {
    match form {
        Form::F32 => {
            let mut o = vec![f32::NAN; len];
            f(Int8Out::F32(&mut o));
            o.iter().map(|v| v.to_bits()).collect()
        }
        Form::U8Relu6 => {
            let mut o = vec![0xAAu8; len];
            f(Int8Out::U8(&mut o));
            o.iter().map(|&v| u32::from(v)).collect()
        }
        Form::I8 => {
            let mut o = vec![0x55i8; len];
            f(Int8Out::I8(&mut o));
            o.iter().map(|&v| u32::from(v.cast_unsigned())).collect()
        }
    }
}

struct ConvCase {
    name: &'static str,
    input: [usize; 4],
    weight: [usize; 4],
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    group: usize,
}

const fn case(
    name: &'static str,
    input: [usize; 4],
    weight: [usize; 4],
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    group: usize,
) -> ConvCase {
    ConvCase {
        name,
        input,
        weight,
        strides,
        pads,
        dilations,
        group,
    }
}

const CONV_CASES: &[ConvCase] = &[
    case(
        "1x1",
        [1, 8, 5, 7],
        [13, 8, 1, 1],
        [1, 1],
        [0; 4],
        [1, 1],
        1,
    ),
    case(
        "1x1 many panels",
        [1, 6, 17, 19],
        [7, 6, 1, 1],
        [1, 1],
        [0; 4],
        [1, 1],
        1,
    ),
    case(
        "1x1 stride 2",
        [1, 5, 9, 8],
        [9, 5, 1, 1],
        [2, 2],
        [0; 4],
        [1, 1],
        1,
    ),
    case(
        "3x3 pad 1",
        [1, 5, 9, 11],
        [7, 5, 3, 3],
        [1, 1],
        [1; 4],
        [1, 1],
        1,
    ),
    case(
        "first layer",
        [1, 3, 23, 21],
        [16, 3, 3, 3],
        [2, 2],
        [1; 4],
        [1, 1],
        1,
    ),
    case(
        "dilated, odd pads",
        [2, 4, 10, 9],
        [6, 4, 3, 3],
        [1, 2],
        [0, 1, 2, 1],
        [2, 1],
        1,
    ),
    case(
        // im2col rows of 37 bytes: 16-byte blocks and an overlapping tail.
        "3x3 wide rows",
        [1, 4, 6, 37],
        [5, 4, 3, 3],
        [1, 1],
        [1; 4],
        [1, 1],
        1,
    ),
    case(
        // Stride 2 rows of 22 outputs: one block and an overlapping tail.
        "3x3 stride 2 wide rows",
        [1, 3, 7, 45],
        [4, 3, 3, 3],
        [2, 2],
        [1, 1, 1, 0],
        [1, 1],
        1,
    ),
    case(
        // Padding 1, 2 and 3 wide at the ends of the im2col rows.
        "5x5 wide pads",
        [1, 4, 9, 10],
        [5, 4, 5, 5],
        [1, 1],
        [2, 3, 2, 3],
        [1, 1],
        1,
    ),
    case(
        // Two samples, asymmetric pads, two panels over the padded grid.
        "3x3 batch 2 asymmetric pads",
        [2, 3, 20, 17],
        [5, 3, 3, 3],
        [1, 1],
        [1, 0, 2, 1],
        [1, 1],
        1,
    ),
    case(
        // A 1x1 kernel with padding runs over the padded grid too.
        "1x1 padded",
        [1, 3, 4, 5],
        [4, 3, 1, 1],
        [1, 1],
        [1, 0, 0, 2],
        [1, 1],
        1,
    ),
    case(
        // Stride 1 along the rows only: im2col rows of 37 bytes copied
        // pixel run by pixel run (16-byte blocks and an overlapping tail).
        "3x3 stride (2, 1) wide rows",
        [1, 4, 9, 37],
        [5, 4, 3, 3],
        [2, 1],
        [1; 4],
        [1, 1],
        1,
    ),
    case(
        // An empty map with padding: every output reads only padding.
        "empty map, padded",
        [1, 3, 0, 4],
        [2, 3, 1, 1],
        [1, 1],
        [1, 0, 1, 0],
        [1, 1],
        1,
    ),
    case(
        "grouped",
        [1, 8, 7, 7],
        [6, 4, 3, 3],
        [1, 1],
        [1; 4],
        [1, 1],
        2,
    ),
    case(
        "depthwise 3x3",
        [1, 6, 9, 10],
        [6, 1, 3, 3],
        [1, 1],
        [1; 4],
        [1, 1],
        6,
    ),
    case(
        "depthwise stride 2",
        [2, 5, 11, 12],
        [5, 1, 3, 3],
        [2, 2],
        [1; 4],
        [1, 1],
        5,
    ),
    case(
        "depthwise x2 5x5 dilated",
        [1, 3, 12, 12],
        [6, 1, 5, 5],
        [1, 1],
        [2, 3, 2, 1],
        [2, 1],
        3,
    ),
    case(
        "1-D",
        [1, 7, 1, 30],
        [9, 7, 1, 3],
        [1, 1],
        [0, 1, 0, 1],
        [1, 1],
        1,
    ),
    case(
        "wide reduction",
        [1, 70, 6, 5],
        [20, 70, 3, 3],
        [1, 1],
        [1; 4],
        [1, 1],
        1,
    ),
    case(
        "kernel = input",
        [1, 4, 3, 3],
        [5, 4, 3, 3],
        [1, 1],
        [0; 4],
        [1, 1],
        1,
    ),
];

fn pools() -> Vec<rayon::ThreadPool> {
    [1, 2]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("test thread pool")
        })
        .collect()
}

/// Every path, thread count, input type and output form against the
/// reference, bit for bit.
#[test]
fn conv_matches_reference() {
    let pools = pools();
    let mut rng = Rng::new(7);
    let mut failures = Vec::new();
    let mut runs = 0;
    for c in CONV_CASES {
        let geom = ConvGeometry {
            input: c.input,
            weight: c.weight,
            strides: c.strides,
            pads: c.pads,
            dilations: c.dilations,
            group: c.group,
        };
        let out_len: usize = geom.output().iter().product();
        let m = c.weight[0];
        for (signed, extreme) in [(false, false), (true, false), (false, true)] {
            let x = Codes::random(&mut rng, c.input.iter().product(), signed, extreme);
            let wlen: usize = c.weight.iter().product();
            let w: Vec<i8> = (0..wlen)
                .map(|_| {
                    if extreme {
                        -128
                    } else {
                        rng.byte().cast_signed()
                    }
                })
                .collect();
            let packed = PackedInt8::conv(&w, c.weight, c.group);
            let bias: Vec<i32> = (0..m).map(|_| rng.int(-5000, 5000)).collect();
            for form in [Form::F32, Form::U8Relu6, Form::I8] {
                let per_channel = rng.byte().is_multiple_of(2);
                let scale: Vec<f32> = (0..if per_channel { m } else { 1 })
                    .map(|_| 1e-4 + rng.unit() * 1e-3)
                    .collect();
                let use_bias = !rng.byte().is_multiple_of(3);
                let stage = stage_for(form, &scale, use_bias.then_some(&bias[..]), &mut rng);
                let (xi, zp) = x.input();
                let want = run_into(form, out_len, |o| {
                    conv2d_int8_reference(xi, zp, &geom, &w, &stage, o);
                });
                for path in [Int8Path::Auto, Int8Path::Portable] {
                    for pool in &pools {
                        let got = pool.install(|| {
                            run_into(form, out_len, |o| {
                                conv2d_int8(
                                    xi,
                                    zp,
                                    &geom,
                                    &packed,
                                    &stage,
                                    o,
                                    Parallelism::Rayon,
                                    path,
                                );
                            })
                        });
                        runs += 1;
                        if got != want {
                            let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                            failures.push(format!(
                                "{} signed={signed} extreme={extreme} {form:?} {path:?} threads={}: {bad} of {out_len} differ",
                                c.name,
                                pool.current_num_threads()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(runs, CONV_CASES.len() * 3 * 3 * 4);
}

#[test]
fn matmul_matches_reference() {
    let pools = pools();
    let mut rng = Rng::new(11);
    let mut failures = Vec::new();
    // (rows, k, m): one row (batch-1 classifier), odd sizes, several panels.
    for (rows, k, m) in [
        (1, 9, 5),
        (1, 64, 1000),
        (3, 7, 13),
        (300, 37, 11),
        (17, 128, 6),
    ] {
        for layout in [
            MatrixLayout::OutputsByReduction,
            MatrixLayout::ReductionByOutputs,
        ] {
            for signed in [false, true] {
                let x = Codes::random(&mut rng, rows * k, signed, false);
                let w: Vec<i8> = (0..m * k).map(|_| rng.byte().cast_signed()).collect();
                let packed = PackedInt8::matrix(&w, m, k, layout);
                let bias: Vec<i32> = (0..m).map(|_| rng.int(-900, 900)).collect();
                for form in [Form::F32, Form::U8Relu6, Form::I8] {
                    let scale: Vec<f32> = (0..m).map(|_| 1e-4 + rng.unit() * 1e-3).collect();
                    let stage = stage_for(form, &scale, Some(&bias), &mut rng);
                    let (xi, zp) = x.input();
                    let want = run_into(form, rows * m, |o| {
                        matmul_int8_reference(xi, zp, rows, k, &w, m, layout, &stage, o);
                    });
                    for path in [Int8Path::Auto, Int8Path::Portable] {
                        for pool in &pools {
                            let got = pool.install(|| {
                                run_into(form, rows * m, |o| {
                                    matmul_int8(
                                        xi,
                                        zp,
                                        rows,
                                        &packed,
                                        &stage,
                                        o,
                                        Parallelism::Rayon,
                                        path,
                                    );
                                })
                            });
                            if got != want {
                                failures.push(format!(
                                    "rows={rows} k={k} m={m} {layout:?} signed={signed} {form:?} {path:?} threads={}",
                                    pool.current_num_threads()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The reference computes what the definition says: one output by hand.
#[test]
fn reference_conv_by_hand() {
    // 1 input channel 2x2, zero point 10, one 2x2 filter, pad 0.
    let x = [12u8, 10, 9, 20];
    let w = [1i8, -2, 3, -4];
    let geom = ConvGeometry {
        input: [1, 1, 2, 2],
        weight: [1, 1, 2, 2],
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        group: 1,
    };
    // (2)(1) + (0)(-2) + (-1)(3) + (10)(-4) + bias 5 = -36.
    let stage = OutputStage {
        bias: Some(&[5]),
        scale: &[0.5],
        tail: None,
    };
    let mut o = [0f32];
    conv2d_int8_reference(Int8In::U8(&x), 10, &geom, &w, &stage, Int8Out::F32(&mut o));
    assert_eq!(o, [-18.0]);
    let packed = PackedInt8::conv(&w, geom.weight, 1);
    for path in [Int8Path::Auto, Int8Path::Portable] {
        let mut f = [0f32];
        conv2d_int8(
            Int8In::U8(&x),
            10,
            &geom,
            &packed,
            &stage,
            Int8Out::F32(&mut f),
            Parallelism::Sequential,
            path,
        );
        assert_eq!(f, [-18.0], "{path:?}");
    }
}

/// The output stage reproduces qtune's float kernels applied in sequence:
/// `Mul` by the scale, `Clip`, `QuantizeLinear` (the simulation graph the
/// fused kernels replace), including ties and saturation.
#[test]
fn output_stage_equals_the_float_kernel_chain() {
    let mut rng = Rng::new(3);
    let mut acc: Vec<i32> = (0..4000).map(|_| rng.int(-3_000_000, 3_000_000)).collect();
    // Ties: accumulators that land exactly on .5 steps with scale 0.5.
    acc.extend([-5, -3, -1, 1, 3, 5, 7, 16_777_215, -16_777_215, 0]);
    for (scale, clamp, qscale, zp) in [
        (0.5f32, None, 1.0f32, 0i32),
        (0.5, None, 1.0, 128),
        (3.1e-4, Some((0.0f32, 6.0f32)), 0.0235, 0),
        (7.7e-5, Some((0.0, f32::INFINITY)), 0.011, 3),
        (2.0e-3, None, 1.0, 77),
    ] {
        let floats: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
        let mut y = vec![0f32; floats.len()];
        binary(
            BinaryOp::Mul,
            &floats,
            &[floats.len()],
            &[scale],
            &[1],
            &mut y,
            Parallelism::Sequential,
        );
        if let Some((lo, hi)) = clamp {
            let op = if hi.is_infinite() {
                UnaryOp::Relu
            } else {
                UnaryOp::Clip { lo, hi }
            };
            unary(op, &mut y, Parallelism::Sequential);
        }
        let mut want = vec![0u8; y.len()];
        quantize_linear_u8(&y, &[qscale], &[zp], QRange::U8, 1, y.len(), &mut want);
        let tail = QuantTail {
            clamp,
            scale: qscale,
            zero_point: zp,
            range: QRange::U8,
        };
        let got: Vec<u8> = acc
            .iter()
            .map(|&a| {
                let q = quantize(rescale(a, scale), &tail);
                assert!(q.fract() == 0.0 && (0.0..=255.0).contains(&q), "{q}");
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let q = q as u8;
                q
            })
            .collect();
        assert_eq!(
            got, want,
            "scale {scale} clamp {clamp:?} q {qscale} zp {zp}"
        );
        let mut fast = vec![0u8; acc.len()];
        finish_u8(&acc, 0, scale, tail, &mut fast);
        assert_eq!(fast, want, "finish_u8, scale {scale}");
        let mut f = vec![0f32; acc.len()];
        finish_f32(&acc, 0, scale, &mut f);
        let mut chain = vec![0f32; acc.len()];
        binary(
            BinaryOp::Mul,
            &floats,
            &[floats.len()],
            &[scale],
            &[1],
            &mut chain,
            Parallelism::Sequential,
        );
        assert_eq!(
            f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            chain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

/// Packing keeps the weight sums of every channel and pads the reduction
/// with zeros.
#[test]
fn packing_sums_and_padding() {
    let w: Vec<i8> = (0..7 * 3 * 3)
        .map(|i| i8::try_from(i % 19).unwrap() - 9)
        .collect();
    let p = PackedInt8::conv(&w, [7, 1, 3, 3], 1);
    assert_eq!((p.k, p.k4, p.m_blocks), (9, 3, 2));
    for c in 0..7 {
        let s: i32 = w[c * 9..c * 9 + 9].iter().map(|&v| i32::from(v)).sum();
        assert_eq!(p.wsum[c], s);
    }
    // Element 9..12 of each row of block 0 is padding.
    let b = p.block(0, 0);
    for r in 0..MR {
        assert_eq!(
            &b[2 * MR * 4 + r * 4 + 1..2 * MR * 4 + r * 4 + 4],
            &[0, 0, 0]
        );
    }
}

/// On a CPU with VNNI (and without `QTUNE_INT8_VNNI=0`), `Auto` runs the
/// VNNI kernels, so the tests above exercise both paths.
#[test]
fn auto_path_uses_vnni_when_present() {
    let off = std::env::var("QTUNE_INT8_VNNI").is_ok_and(|v| v == "0");
    assert_eq!(vnni_available(), cpu_has_vnni() && !off);
    assert!(!Int8Path::Portable.use_vnni());
}
