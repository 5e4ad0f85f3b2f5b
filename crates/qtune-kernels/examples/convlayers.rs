//! Per-layer convolution benchmark over a list of layer shapes, as the executor runs them at
//! batch 1: one layer after another inside a rayon pool whose other workers keep spinning (as
//! in the executor). Prints each layer's median time and the sum, per pool size (`THREADS`,
//! a comma-separated list, default 2).
//!
//! `cargo run --release -p qtune-kernels --example convlayers -- SHAPES [ROUNDS]`, where SHAPES
//! has one layer a line: `n c h w m c_g kh kw sh sw pad_top pad_left pad_bottom pad_right group`.
//!
//! Weights are packed once per layer beforehand ([`PackedConvWeights::for_conv`]), as the
//! executor packs them once per model.
//!
//! `CPUTIME=1` (Linux, with `THREADS=1`) times each layer by the thread's CPU time instead of
//! the wall clock: on a host shared with other jobs the wall clock counts the time slices
//! other processes took, the thread's CPU time does not (cache pollution remains).

use qtune_kernels::{
    Conv2dParams, PackedConvWeights, Parallelism, conv2d_fused_packed_uninit, conv2d_out_dims,
};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

struct Layer {
    in_dims: [usize; 4],
    w_dims: [usize; 4],
    p: Conv2dParams,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    out: Vec<MaybeUninit<f32>>,
    /// The weights packed once, as the executor packs them.
    packed: Option<PackedConvWeights>,
    flops: f64,
}

/// CPU time of the calling thread, in seconds (Linux `CLOCK_THREAD_CPUTIME_ID`).
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid `struct timespec` for the call to write.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> f64 {
    panic!("CPUTIME=1 needs Linux")
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

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: convlayers SHAPES [ROUNDS]");
    let rounds: usize = args.next().map_or(200, |r| r.parse().expect("rounds"));
    let text = std::fs::read_to_string(&path).expect("read shapes");
    let mut layers: Vec<Layer> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: Vec<usize> = l
                .split_whitespace()
                .map(|t| t.parse().expect("int"))
                .collect();
            let in_dims = [v[0], v[1], v[2], v[3]];
            let w_dims = [v[4], v[5], v[6], v[7]];
            let p = Conv2dParams::new([v[8], v[9]], [v[10], v[11], v[12], v[13]], [1, 1], v[14]);
            let od = conv2d_out_dims(in_dims, w_dims, &p);
            let flops = 2.0 * (od.iter().product::<usize>() * v[5] * v[6] * v[7]) as f64;
            let w = filled(w_dims.iter().product(), 2);
            Layer {
                x: filled(in_dims.iter().product(), 1 + i as u32),
                packed: PackedConvWeights::for_conv(&w, in_dims, w_dims, &p),
                w,
                b: filled(w_dims[0], 3),
                out: vec![MaybeUninit::new(0.0); od.iter().product()],
                in_dims,
                w_dims,
                p,
                flops,
            }
        })
        .collect();
    let threads_list: Vec<usize> = std::env::var("THREADS")
        .unwrap_or_else(|_| "2".into())
        .split(',')
        .map(|t| t.parse().expect("threads"))
        .collect();
    let cputime = std::env::var("CPUTIME").is_ok_and(|v| v == "1");
    for threads in threads_list {
        assert!(!cputime || threads == 1, "CPUTIME=1 needs THREADS=1");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        let mut samples = vec![Vec::with_capacity(rounds); layers.len()];
        pool.install(|| {
            // Keep the other workers spinning, as the executor does during a run.
            let done = AtomicBool::new(false);
            let me = rayon::current_thread_index();
            rayon::in_place_scope(|scope| {
                for _ in 1..rayon::current_num_threads() {
                    scope.spawn(|_| {
                        if rayon::current_thread_index() == me {
                            return;
                        }
                        while !done.load(Ordering::Acquire) {
                            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                for r in 0..rounds + 3 {
                    {
                        for (l, s) in layers.iter_mut().zip(samples.iter_mut()) {
                            let t = Instant::now();
                            let c0 = if cputime { thread_cpu_seconds() } else { 0.0 };
                            conv2d_fused_packed_uninit(
                                &l.x,
                                l.in_dims,
                                &l.w,
                                l.w_dims,
                                l.packed.as_ref(),
                                Some(&l.b),
                                &l.p,
                                None,
                                &mut l.out,
                                Parallelism::Rayon,
                            );
                            if r >= 3 {
                                s.push(if cputime {
                                    thread_cpu_seconds() - c0
                                } else {
                                    t.elapsed().as_secs_f64()
                                });
                            }
                        }
                    }
                }
                done.store(true, Ordering::Release);
            });
        });
        let mut total = 0.0;
        println!("threads {threads}");
        for (l, s) in layers.iter().zip(samples.iter_mut()) {
            s.sort_by(f64::total_cmp);
            let med = s[s.len() / 2];
            total += med;
            println!(
                "  {:<44} {:>8.1} us {:>6.1} GFLOP/s",
                format!(
                    "{:?}{:?}s{}g{}",
                    l.in_dims, l.w_dims, l.p.strides[0], l.p.group
                ),
                med * 1e6,
                l.flops / med * 1e-9
            );
        }
        println!("  total {:.3} ms", total * 1e3);
    }
}
