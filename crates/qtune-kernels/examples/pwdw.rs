//! Expansion + depthwise pairs of MobileNetV2 at batch 1: two `conv2d_fused` calls against one
//! `conv2d_pointwise_depthwise`, median microseconds in pools of 1 and 2 threads.
//!
//! `cargo run --release -p qtune-kernels --example pwdw`
//!
//! `THREADS` (comma-separated pool sizes, default `1,2`); `CPUTIME=1` (Linux) times each
//! call by the calling thread's CPU time instead of the wall clock (meaningful with
//! `THREADS=1` on a host shared with other jobs); `ROUNDS` (default 300).

use qtune_kernels::{
    Conv2dParams, Parallelism, UnaryOp, conv2d_fused, conv2d_out_dims, conv2d_pointwise_depthwise,
};
use std::time::Instant;

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

/// Seconds since an arbitrary origin: the thread's CPU time or the wall clock.
fn now(cputime: bool, origin: Instant) -> f64 {
    if cputime {
        thread_cpu_seconds()
    } else {
        origin.elapsed().as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let act = Some(UnaryOp::Clip { lo: 0.0, hi: 6.0 });
    // (c, h, w, m, stride, pads)
    let shapes = [
        (16, 112, 112, 96, 2, [0, 0, 1, 1]),
        (24, 56, 56, 144, 1, [1, 1, 1, 1]),
        (24, 56, 56, 144, 2, [0, 0, 1, 1]),
        (32, 28, 28, 192, 1, [1, 1, 1, 1]),
    ];
    let threads_list: Vec<usize> = std::env::var("THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|t| t.trim().parse().expect("THREADS: comma-separated counts"))
        .collect();
    let cputime = std::env::var("CPUTIME").is_ok_and(|v| v == "1");
    let rounds: usize = std::env::var("ROUNDS").map_or(300, |r| r.parse().expect("ROUNDS"));
    let origin = Instant::now();
    for threads in threads_list {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        for &(c, h, w, m, s, pads) in &shapes {
            let x = filled(c * h * w, 1);
            let w1 = filled(m * c, 2);
            let b1 = filled(m, 3);
            let w2 = filled(m * 9, 4);
            let b2 = filled(m, 5);
            let dw_p = Conv2dParams::new([s, s], pads, [1, 1], m);
            let od = conv2d_out_dims([1, m, h, w], [m, 1, 3, 3], &dw_p);
            let mut mid = vec![0.0; m * h * w];
            let mut o = vec![0.0; od.iter().product()];
            let (mut a, mut b) = (Vec::new(), Vec::new());
            pool.install(|| {
                for _ in 0..rounds {
                    let t = now(cputime, origin);
                    conv2d_fused(
                        &x,
                        [1, c, h, w],
                        &w1,
                        [m, c, 1, 1],
                        Some(&b1),
                        &Conv2dParams::default(),
                        act,
                        &mut mid,
                        Parallelism::Rayon,
                    );
                    conv2d_fused(
                        &mid,
                        [1, m, h, w],
                        &w2,
                        [m, 1, 3, 3],
                        Some(&b2),
                        &dw_p,
                        act,
                        &mut o,
                        Parallelism::Rayon,
                    );
                    a.push(now(cputime, origin) - t);
                    let t = now(cputime, origin);
                    conv2d_pointwise_depthwise(
                        &x,
                        [1, c, h, w],
                        &w1,
                        Some(&b1),
                        act,
                        &w2,
                        [m, 1, 3, 3],
                        Some(&b2),
                        &dw_p,
                        act,
                        &mut o,
                        Parallelism::Rayon,
                    );
                    b.push(now(cputime, origin) - t);
                }
            });
            println!(
                "threads {threads} {c}->{m} {h}x{w} s{s}: two convs {:7.1} us, fused {:7.1} us",
                median(a) * 1e6,
                median(b) * 1e6
            );
        }
    }
}
