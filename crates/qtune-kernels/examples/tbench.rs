//! Transformer kernel micro-benchmark: the shapes of minilm_l6_s128 (BERT, hidden 384,
//! 12 heads of 32, sequence 128, FFN 1536) at batch 1, in rayon pools of 1 and 2 threads.
//! Prints best / median microseconds per call and GFLOP/s (or Gelem/s for the
//! memory-bound kernels) over about half a second per kernel.
//!
//! Run with `cargo run --release -p qtune-kernels --example tbench [FILTER]`.

use qtune_kernels::{
    BinaryOp, Parallelism, ReduceOp, UnaryOp, batched_gemm, binary, gemm, reduce, softmax,
    transpose, transpose_blocked, unary,
};
use std::time::{Duration, Instant};

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
    /// Flops (or elements, for memory-bound kernels) per call.
    work: f64,
    run: Box<dyn FnMut() + Send>,
}

fn gemm_bench(m: usize, k: usize, n: usize) -> Bench {
    let a = filled(m * k, 1);
    let b = filled(k * n, 2);
    let mut c = vec![0.0; m * n];
    Bench {
        name: format!("gemm {m}x{k}x{n}"),
        work: 2.0 * (m * k * n) as f64,
        run: Box::new(move || {
            gemm(
                m,
                k,
                n,
                &a,
                false,
                &b,
                false,
                &mut c,
                false,
                Parallelism::Rayon,
            )
        }),
    }
}

fn batched_bench(batch: usize, m: usize, k: usize, n: usize) -> Bench {
    let a = filled(batch * m * k, 1);
    let b = filled(batch * k * n, 2);
    let mut c = vec![0.0; batch * m * n];
    Bench {
        name: format!("matmul {batch}x[{m}x{k}x{n}]"),
        work: 2.0 * (batch * m * k * n) as f64,
        run: Box::new(move || {
            batched_gemm(
                batch,
                m,
                k,
                n,
                &a,
                m * k,
                false,
                &b,
                k * n,
                false,
                &mut c,
                Parallelism::Rayon,
            )
        }),
    }
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let (s, h, d, hid, ffn) = (128, 12, 32, 384, 1536);
    let mut benches = vec![
        gemm_bench(s, hid, hid),
        gemm_bench(s, hid, ffn),
        gemm_bench(s, ffn, hid),
        batched_bench(h, s, d, s),
        batched_bench(h, s, s, d),
    ];
    {
        let x = filled(h * s * s, 3);
        let mut y = x.clone();
        benches.push(Bench {
            name: "softmax [12,128,128] (Gelem/s)".into(),
            work: (h * s * s) as f64,
            run: Box::new(move || {
                y.copy_from_slice(&x);
                softmax(&mut y, &[1, h, s, s], 3, Parallelism::Rayon);
            }),
        });
    }
    {
        let x = filled(s * ffn, 4);
        let mut y = x.clone();
        benches.push(Bench {
            name: "erf [128,1536] (Gelem/s)".into(),
            work: (s * ffn) as f64,
            run: Box::new(move || {
                y.copy_from_slice(&x);
                unary(UnaryOp::Erf, &mut y, Parallelism::Rayon);
            }),
        });
    }
    for (name, op, bd) in [
        ("add [128,384]+[128,384]", BinaryOp::Add, vec![1, s, hid]),
        ("sub [128,384]-[128,1]", BinaryOp::Sub, vec![1, s, 1]),
        ("mul [128,384]*[384]", BinaryOp::Mul, vec![hid]),
        ("div [12,128,128]/[]", BinaryOp::Div, vec![]),
    ] {
        let ad = if name.starts_with("div") {
            vec![1, h, s, s]
        } else {
            vec![1, s, hid]
        };
        let a = filled(ad.iter().product(), 5);
        let b: Vec<f32> = filled(bd.iter().product(), 6)
            .into_iter()
            .map(|v| v + 2.0)
            .collect();
        let mut o = vec![0.0; a.len()];
        let n = a.len();
        benches.push(Bench {
            name: format!("{name} (Gelem/s)"),
            work: n as f64,
            run: Box::new(move || binary(op, &a, &ad, &b, &bd, &mut o, Parallelism::Rayon)),
        });
    }
    {
        let x = filled(s * hid, 7);
        let mut o = vec![0.0; s];
        benches.push(Bench {
            name: "reducemean [128,384] axis -1 (Gelem/s)".into(),
            work: (s * hid) as f64,
            run: Box::new(move || reduce(ReduceOp::Mean, &x, &[1, s, hid], &[2], &mut o)),
        });
    }
    for (name, perm) in [
        ("transpose [1,128,12,32] 0213 (Gelem/s)", [0, 2, 1, 3]),
        ("transpose [1,128,12,32] 0231 (Gelem/s)", [0, 2, 3, 1]),
    ] {
        let x = filled(s * hid, 8);
        let mut o = vec![0.0; s * hid];
        let mut o2 = vec![0.0; s * hid];
        let x2 = x.clone();
        benches.push(Bench {
            name: name.into(),
            work: (s * hid) as f64,
            run: Box::new(move || transpose(&x, &[1, s, h, d], &perm, &mut o)),
        });
        benches.push(Bench {
            name: name.replace("transpose", "transpose_blocked"),
            work: (s * hid) as f64,
            run: Box::new(move || {
                transpose_blocked(&x2, &[1, s, h, d], &perm, &mut o2, Parallelism::Rayon)
            }),
        });
    }
    println!(
        "{:<40} {:>30} {:>30}",
        "kernel", "1 thread best/med us (G/s)", "2 threads best/med us (G/s)"
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
            let (best, med) = pool.install(|| time(Duration::from_millis(500), &mut b.run));
            cols.push(format!(
                "{:>7.1} / {:>7.1} ({:>6.1})",
                best * 1e6,
                med * 1e6,
                b.work / best * 1e-9,
            ));
        }
        println!("{:<40} {:>30} {:>30}", b.name, cols[0], cols[1]);
    }
}
