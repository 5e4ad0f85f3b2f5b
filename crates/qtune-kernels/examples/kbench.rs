//! Kernel micro-benchmark: prints GFLOP/s (best / median over about one second) for the
//! shapes the product is judged on, in rayon pools of 1 and 2 threads.
//!
//! Run with `cargo run --release -p qtune-kernels --example kbench` (add an argument, e.g.
//! `conv`, to run only the benchmarks whose name contains it; `bert` runs the shapes of
//! minilm_l6_s128, a BERT layer at batch 1: hidden 384, 12 heads of 32, sequence 128, FFN
//! 1536).

use qtune_kernels::{
    BinaryOp, Conv2dParams, Parallelism, Pool2dParams, ReduceOp, UnaryOp, binary, conv2d,
    conv2d_out_dims, gemm, matmul, max_pool2d, pool2d_out_dims, reduce, softmax, transpose_blocked,
    unary,
};
use std::time::{Duration, Instant};

/// Best and median seconds per call of `f`, after a warm-up, over about `budget`.
fn time(budget: Duration, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2])
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

struct Bench {
    name: String,
    flops: f64,
    run: Box<dyn FnMut() + Send>,
}

fn conv_bench(
    name: &'static str,
    in_dims: [usize; 4],
    w_dims: [usize; 4],
    p: Conv2dParams,
) -> Bench {
    let x = filled(in_dims.iter().product(), 1);
    let w = filled(w_dims.iter().product(), 2);
    let b = filled(w_dims[0], 3);
    let od = conv2d_out_dims(in_dims, w_dims, &p);
    let mut out = vec![0.0; od.iter().product()];
    let flops = 2.0 * (od.iter().product::<usize>() * w_dims[1] * w_dims[2] * w_dims[3]) as f64;
    Bench {
        name: name.into(),
        flops,
        run: Box::new(move || {
            conv2d(
                &x,
                in_dims,
                &w,
                w_dims,
                Some(&b),
                &p,
                &mut out,
                Parallelism::Rayon,
            )
        }),
    }
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let n = 1024;
    let a = filled(n * n, 4);
    let bm = filled(n * n, 5);
    let mut c = vec![0.0; n * n];
    let act = filled(64 * 112 * 112, 6);
    let mut act_out = act.clone();
    let pool_in = filled(256 * 20 * 20, 7);
    let pool_p = Pool2dParams::new([13, 13]).pads([6; 4]);
    let mut pool_out = vec![0.0; pool2d_out_dims([1, 256, 20, 20], &pool_p).iter().product()];
    let mut benches = vec![
        Bench {
            name: "sgemm 1024^3".into(),
            flops: 2.0 * (n * n * n) as f64,
            run: Box::new(move || {
                gemm(
                    n,
                    n,
                    n,
                    &a,
                    false,
                    &bm,
                    false,
                    &mut c,
                    false,
                    Parallelism::Rayon,
                )
            }),
        },
        conv_bench(
            "conv 64->64 3x3 56x56 pad1",
            [1, 64, 56, 56],
            [64, 64, 3, 3],
            Conv2dParams::new([1, 1], [1; 4], [1, 1], 1),
        ),
        conv_bench(
            "dwconv 144 3x3 56x56 pad1",
            [1, 144, 56, 56],
            [144, 1, 3, 3],
            Conv2dParams::new([1, 1], [1; 4], [1, 1], 144),
        ),
        conv_bench(
            "dwconv 144 3x3 56x56 s2",
            [1, 144, 56, 56],
            [144, 1, 3, 3],
            Conv2dParams::new([2, 2], [0, 0, 1, 1], [1, 1], 144),
        ),
        conv_bench(
            "dwconv 240 5x5 28x28 pad2",
            [1, 240, 28, 28],
            [240, 1, 5, 5],
            Conv2dParams::new([1, 1], [2; 4], [1, 1], 240),
        ),
        conv_bench(
            "dwconv 576 3x3 14x14 pad1",
            [1, 576, 14, 14],
            [576, 1, 3, 3],
            Conv2dParams::new([1, 1], [1; 4], [1, 1], 576),
        ),
        conv_bench(
            "dwconv 960 3x3 7x7 pad1",
            [1, 960, 7, 7],
            [960, 1, 3, 3],
            Conv2dParams::new([1, 1], [1; 4], [1, 1], 960),
        ),
        conv_bench(
            "conv1x1 144->24 56x56",
            [1, 144, 56, 56],
            [24, 144, 1, 1],
            Conv2dParams::default(),
        ),
        conv_bench(
            "conv1x1 320->1280 7x7",
            [1, 320, 7, 7],
            [1280, 320, 1, 1],
            Conv2dParams::default(),
        ),
        conv_bench(
            "conv 3->32 3x3 s2 224x224",
            [1, 3, 224, 224],
            [32, 3, 3, 3],
            Conv2dParams::new([2, 2], [1; 4], [1, 1], 1),
        ),
        conv_bench(
            "conv 128->128 3x3 80x80 (yolox)",
            [1, 128, 80, 80],
            [128, 128, 3, 3],
            Conv2dParams::new([1, 1], [1; 4], [1, 1], 1),
        ),
        Bench {
            name: "maxpool 13x13 256x20x20 (Gop/s)".into(),
            flops: (256 * 20 * 20 * 169) as f64,
            run: Box::new(move || {
                max_pool2d(
                    &pool_in,
                    [1, 256, 20, 20],
                    &pool_p,
                    &mut pool_out,
                    Parallelism::Rayon,
                )
            }),
        },
        Bench {
            name: "sigmoid 64x112x112 (Gelem/s)".into(),
            flops: (64 * 112 * 112) as f64,
            run: Box::new(move || {
                act_out.copy_from_slice(&act);
                unary(UnaryOp::Sigmoid, &mut act_out, Parallelism::Rayon)
            }),
        },
    ];
    benches.extend(bert_benches());
    println!(
        "{:<44} {:>8} {:>22} {:>22}",
        "kernel", "MFLOP", "1 thread best/median", "2 threads best/median"
    );
    for mut b in benches {
        if !b.name.contains(filter.as_str()) {
            continue;
        }
        let mut cols = Vec::new();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("rayon pool");
            let (best, med) = pool.install(|| time(Duration::from_millis(1000), &mut b.run));
            cols.push(format!(
                "{:>7.1} / {:>6.1} ({:.4} ms)",
                b.flops / best * 1e-9,
                b.flops / med * 1e-9,
                med * 1e3
            ));
        }
        println!(
            "{:<44} {:>8.1} {:>22} {:>22}",
            b.name,
            b.flops * 1e-6,
            cols[0],
            cols[1]
        );
    }
}

/// A batched ONNX MatMul `[1, batch.., m, k] x [1, batch.., k, n]` (or a 2-D right operand).
fn matmul_bench(name: &str, a_dims: &[usize], b_dims: &[usize]) -> Bench {
    let (a_dims, b_dims) = (a_dims.to_vec(), b_dims.to_vec());
    let a = filled(a_dims.iter().product(), 1);
    let b = filled(b_dims.iter().product(), 2);
    let od = qtune_kernels::matmul_out_dims(&a_dims, false, &b_dims, false).expect("dims");
    let k = a_dims[a_dims.len() - 1];
    let mut c = vec![0.0; od.iter().product()];
    Bench {
        name: name.into(),
        flops: 2.0 * (c.len() * k) as f64,
        run: Box::new(move || matmul(&a, &a_dims, &b, &b_dims, &mut c, Parallelism::Rayon)),
    }
}

/// The kernels of one minilm_l6_s128 layer at batch 1 (`bert` in the names).
fn bert_benches() -> Vec<Bench> {
    let (s, h, d, hid, ffn) = (128, 12, 32, 384, 1536);
    let mut v = vec![
        matmul_bench(
            "bert gemm 128x384x384 (QKV, dense)",
            &[1, s, hid],
            &[hid, hid],
        ),
        matmul_bench("bert gemm 128x384x1536 (FFN up)", &[1, s, hid], &[hid, ffn]),
        matmul_bench(
            "bert gemm 128x1536x384 (FFN down)",
            &[1, s, ffn],
            &[ffn, hid],
        ),
        matmul_bench(
            "bert attention Q K^T 12x128x32x128",
            &[1, h, s, d],
            &[1, h, d, s],
        ),
        matmul_bench(
            "bert attention P V 12x128x128x32",
            &[1, h, s, s],
            &[1, h, s, d],
        ),
    ];
    let scores = filled(h * s * s, 3);
    let mut work = scores.clone();
    v.push(Bench {
        name: "bert softmax [12,128,128] (Gelem/s)".into(),
        flops: (h * s * s) as f64,
        run: Box::new(move || {
            work.copy_from_slice(&scores);
            softmax(&mut work, &[1, h, s, s], 3, Parallelism::Rayon);
        }),
    });
    let act = filled(s * ffn, 4);
    let mut work = act.clone();
    v.push(Bench {
        name: "bert erf [128,1536] (Gelem/s)".into(),
        flops: (s * ffn) as f64,
        run: Box::new(move || {
            work.copy_from_slice(&act);
            unary(UnaryOp::Erf, &mut work, Parallelism::Rayon);
        }),
    });
    for (name, op, bd) in [
        (
            "bert add [128,384]+[128,384] (Gelem/s)",
            BinaryOp::Add,
            vec![1, s, hid],
        ),
        (
            "bert sub [128,384]-[128,1] (Gelem/s)",
            BinaryOp::Sub,
            vec![1, s, 1],
        ),
        (
            "bert mul [128,384]*[384] (Gelem/s)",
            BinaryOp::Mul,
            vec![hid],
        ),
    ] {
        let ad = vec![1, s, hid];
        let a = filled(s * hid, 5);
        let b = filled(bd.iter().product(), 6);
        let mut o = vec![0.0; a.len()];
        v.push(Bench {
            name: name.into(),
            flops: (s * hid) as f64,
            run: Box::new(move || binary(op, &a, &ad, &b, &bd, &mut o, Parallelism::Rayon)),
        });
    }
    let x = filled(s * hid, 7);
    let mut mean = vec![0.0; s];
    v.push(Bench {
        name: "bert reducemean [128,384] axis -1 (Gelem/s)".into(),
        flops: (s * hid) as f64,
        run: Box::new(move || reduce(ReduceOp::Mean, &x, &[1, s, hid], &[2], &mut mean)),
    });
    for (name, perm) in [
        ("bert transpose [1,128,12,32] 0213 (Gelem/s)", [0, 2, 1, 3]),
        ("bert transpose [1,128,12,32] 0231 (Gelem/s)", [0, 2, 3, 1]),
    ] {
        let x = filled(s * hid, 8);
        let mut o = vec![0.0; s * hid];
        v.push(Bench {
            name: name.into(),
            flops: (s * hid) as f64,
            run: Box::new(move || {
                transpose_blocked(&x, &[1, s, h, d], &perm, &mut o, Parallelism::Rayon)
            }),
        });
    }
    v
}
