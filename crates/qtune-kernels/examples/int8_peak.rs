//! The machine's int8 peak (a register-only `vpdpbusd` loop, 1 and 2
//! threads) and the rate the int8 conv kernels reach on a few layer shapes,
//! VNNI and portable paths, 1 and 2 threads; best of repeated runs.
//!
//!     cargo run --release -p qtune-kernels --example int8_peak

use std::time::Instant;

use qtune_kernels::Parallelism;
use qtune_kernels::int8::{
    ConvGeometry, Int8In, Int8Out, Int8Path, OutputStage, PackedInt8, QRange, QuantTail,
    conv2d_int8, vnni_available,
};

/// 24 independent accumulators (more than the `vpdpbusd` latency times
/// its throughput), `iters` rounds; returns int8 ops (2 per multiply-add).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn vnni_loop(iters: usize) -> (f64, i32) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 24];
    let x = _mm512_set1_epi32(0x0101_0101);
    let y = _mm512_set1_epi32(0x0102_0304);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_dpbusd_epi32(*a, x, y);
        }
    }
    let mut s = _mm512_setzero_si512();
    for a in acc {
        s = _mm512_add_epi32(s, a);
    }
    #[allow(clippy::cast_precision_loss)]
    let ops = (iters * 24 * 64 * 2) as f64;
    (ops, _mm512_reduce_add_epi32(s))
}

fn peak(threads: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if !vnni_available() {
            return 0.0;
        }
        // The best of short bursts: on a shared machine a long run measures
        // the other processes as much as the CPU.
        let iters = 2_000_000;
        let mut best = 0f64;
        for _ in 0..15 {
            let start = Instant::now();
            let total: f64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        // SAFETY: the CPU has AVX-512 VNNI (checked above).
                        s.spawn(move || unsafe { vnni_loop(iters) })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        let (ops, sum) = h.join().expect("peak thread");
                        std::hint::black_box(sum);
                        ops
                    })
                    .sum()
            });
            best = best.max(total / start.elapsed().as_secs_f64() / 1e9);
        }
        best
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        0.0
    }
}

/// Name, input `[n, c, h, w]`, weight `[m, c / g, kh, kw]`, stride, pad, group.
type Layer = (&'static str, [usize; 4], [usize; 4], usize, usize, usize);

fn main() {
    println!("vnni available: {}", vnni_available());
    for t in [1, 2] {
        println!("vpdpbusd peak, {t} thread(s): {:.1} GOP/s", peak(t));
    }
    let layers: &[Layer] = &[
        (
            "1x1 96->576 14x14",
            [1, 96, 14, 14],
            [576, 96, 1, 1],
            1,
            0,
            1,
        ),
        (
            "1x1 32->192 28x28",
            [1, 32, 28, 28],
            [192, 32, 1, 1],
            1,
            0,
            1,
        ),
        (
            "1x1 128->128 52x52",
            [1, 128, 52, 52],
            [128, 128, 1, 1],
            1,
            0,
            1,
        ),
        ("3x3 64->64 52x52", [1, 64, 52, 52], [64, 64, 3, 3], 1, 1, 1),
        (
            "first 3->32 s2 224",
            [1, 3, 224, 224],
            [32, 3, 3, 3],
            2,
            1,
            1,
        ),
        (
            "dw 3x3 144 56x56",
            [1, 144, 56, 56],
            [144, 1, 3, 3],
            1,
            1,
            144,
        ),
    ];
    let pools: Vec<_> = [1, 2]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("pool")
        })
        .collect();
    for &(name, input, weight, s, p, group) in layers {
        let geom = ConvGeometry {
            input,
            weight,
            strides: [s, s],
            pads: [p; 4],
            dilations: [1, 1],
            group,
        };
        let x: Vec<u8> = (0..input.iter().product::<usize>())
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let w: Vec<i8> = (0..weight.iter().product::<usize>())
            .map(|i| (i * 13 % 255) as i8)
            .collect();
        let packed = PackedInt8::conv(&w, weight, group);
        let scale = vec![1e-3f32; weight[0]];
        let stage = OutputStage {
            bias: None,
            scale: &scale,
            tail: Some(QuantTail {
                clamp: Some((0.0, 6.0)),
                scale: 0.02,
                zero_point: 0,
                range: QRange::U8,
            }),
        };
        let out_len: usize = geom.output().iter().product();
        let macs = out_len * weight[1] * weight[2] * weight[3];
        let mut out = vec![0u8; out_len];
        for path in [Int8Path::Auto, Int8Path::Portable] {
            for pool in &pools {
                let mut run = || {
                    conv2d_int8(
                        Int8In::U8(&x),
                        128,
                        &geom,
                        &packed,
                        &stage,
                        Int8Out::U8(&mut out),
                        Parallelism::Rayon,
                        path,
                    );
                };
                pool.install(&mut run);
                // The fastest of the repetitions (see `peak`).
                let reps = (2e9 / macs as f64).clamp(5.0, 2000.0) as usize;
                let mut secs = f64::INFINITY;
                for _ in 0..reps {
                    let start = Instant::now();
                    pool.install(&mut run);
                    secs = secs.min(start.elapsed().as_secs_f64());
                }
                println!(
                    "{name:24} {path:?} {} thread(s): {:8.3} ms {:6.1} GOP/s",
                    pool.current_num_threads(),
                    secs * 1e3,
                    2.0 * macs as f64 / secs / 1e9
                );
            }
        }
    }
}
