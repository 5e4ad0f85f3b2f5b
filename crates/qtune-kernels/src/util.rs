//! Small helpers shared by the kernels: tiling over rayon, raw output pointers for
//! disjoint tile writes, shape and stride arithmetic.

use crate::Parallelism;

/// Whether to hand tiles to rayon. A one-thread pool gains nothing and, when the caller is
/// not a worker of that pool, costs a thread hand-off per call; the tiling (and so every
/// result bit) is the same either way.
fn use_rayon(par: Parallelism) -> bool {
    par == Parallelism::Rayon && rayon::current_num_threads() > 1
}

/// Below this many flops a kernel runs on the calling thread even when asked for rayon:
/// spreading a few microseconds of work costs more than it saves. Only the scheduling
/// changes, never the tiling, so results are unaffected.
pub(crate) const MIN_PARALLEL_FLOPS: usize = 1 << 20;

/// `par`, or `Sequential` when the job is too small to be worth spreading.
pub(crate) fn par_for_work(par: Parallelism, flops: usize) -> Parallelism {
    if flops < MIN_PARALLEL_FLOPS {
        Parallelism::Sequential
    } else {
        par
    }
}

/// Runs `f(tile)` for every tile index in `0..tiles`, on the current rayon pool when
/// `par` is [`Parallelism::Rayon`]. The tiling itself is fixed by the caller, so results
/// never depend on the number of threads.
pub(crate) fn for_each_tile<F>(tiles: usize, par: Parallelism, f: F)
where
    F: Fn(usize) + Sync + Send,
{
    if use_rayon(par) && tiles > 1 {
        claim_tiles(tiles, &f)
    } else {
        (0..tiles).for_each(f)
    }
}

/// Runs `f(tile)` for `0..tiles` with one task per pool thread (at most one per tile), each
/// claiming the next unclaimed tile from a shared counter until none is left. One parallel
/// region per call: a recursive split of the range (`into_par_iter`) costs a join, and
/// often a steal, per level, which on the small layers of a batch-1 CNN is a noticeable
/// share of the layer. Which thread runs a tile never changes what the tile computes.
///
/// With two threads, the calling thread claims tiles from the front and the other from the
/// back, so that consecutive kernels give each thread the same part of their tensors
/// (channels or rows): a kernel then mostly reads what the same core wrote into its own L2
/// cache one kernel before. Claimed in turns from one counter, the tiles of one layer went
/// to either thread at random.
fn claim_tiles<F>(tiles: usize, f: &F)
where
    F: Fn(usize) + Sync,
{
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let helpers = rayon::current_num_threads().min(tiles) - 1;
    if helpers == 1 {
        // `front << 32 | back`: tiles `front..back` are unclaimed.
        let range = AtomicU64::new(tiles as u64);
        let claim = |from_back: bool| -> Option<usize> {
            let mut cur = range.load(Ordering::Relaxed);
            loop {
                let (front, back) = (cur >> 32, cur & 0xffff_ffff);
                if front >= back {
                    return None;
                }
                let (next, t) = if from_back {
                    (front << 32 | (back - 1), back - 1)
                } else {
                    ((front + 1) << 32 | back, front)
                };
                match range.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return Some(t as usize),
                    Err(now) => cur = now,
                }
            }
        };
        let work = |from_back: bool| {
            while let Some(t) = claim(from_back) {
                f(t);
            }
        };
        rayon::in_place_scope(|scope| {
            scope.spawn(|_| work(true));
            work(false);
        });
        return;
    }
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= tiles {
                break;
            }
            f(t);
        }
    };
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| work());
        }
        work();
    });
}

/// Runs `f(chunk_index, chunk)` over fixed-size chunks of `data`.
pub(crate) fn for_each_chunk_mut<T, F>(data: &mut [T], chunk: usize, par: Parallelism, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if use_rayon(par) && data.len() > chunk {
        let len = data.len();
        let ptr = SendPtr(data.as_mut_ptr());
        claim_tiles(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: chunk `i` is `start..start + n` of `data`, which outlives the loop;
            // every chunk index is claimed exactly once, so the slices are disjoint.
            let c = unsafe { std::slice::from_raw_parts_mut(ptr.base().add(start), n) };
            f(i, c)
        });
    } else {
        data.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// A raw pointer to an output buffer that tiles write disjoint parts of.
///
/// Safety contract (upheld by every user): two tiles never write the same element, and the
/// buffer outlives the parallel loop.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: see the type's contract; tiles write disjoint elements only.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
    /// The pointer, through a shared reference (for element types that are not `Copy`).
    pub(crate) fn base(&self) -> *mut T {
        self.0
    }
}

pub(crate) fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Row-major strides of `dims`.
pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Strides of `dims` (right-aligned against `out_dims`) as seen when broadcasting to
/// `out_dims`: broadcast axes get stride 0. `dims` must be broadcastable to `out_dims`.
pub(crate) fn broadcast_strides(dims: &[usize], out_dims: &[usize]) -> Vec<usize> {
    let rank = out_dims.len();
    assert!(dims.len() <= rank, "operand rank exceeds output rank");
    let own = strides(dims);
    let off = rank - dims.len();
    (0..rank)
        .map(|i| {
            if i < off {
                0
            } else {
                let d = dims[i - off];
                assert!(
                    d == out_dims[i] || d == 1,
                    "dims {dims:?} do not broadcast to {out_dims:?}"
                );
                if d == 1 && out_dims[i] != 1 {
                    0
                } else {
                    own[i - off]
                }
            }
        })
        .collect()
}

/// Merges adjacent axes that are contiguous for every operand (each entry of `strides` is
/// one operand's per-axis strides). Returns the merged dims and strides; size-1 axes are
/// dropped. The result always has at least one axis.
pub(crate) fn merge_axes(dims: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut md: Vec<usize> = Vec::new();
    let mut ms: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (i, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = !md.is_empty()
            && strides.iter().enumerate().all(|(k, s)| {
                let last = *ms[k].last().unwrap_or(&0);
                last == s[i] * d
            });
        if mergeable {
            if let Some(l) = md.last_mut() {
                *l *= d;
            }
            for (k, s) in strides.iter().enumerate() {
                if let Some(l) = ms[k].last_mut() {
                    *l = s[i];
                }
            }
        } else {
            md.push(d);
            for (k, s) in strides.iter().enumerate() {
                ms[k].push(s[i]);
            }
        }
    }
    if md.is_empty() {
        md.push(1);
        for s in ms.iter_mut() {
            s.push(0);
        }
    }
    (md, ms)
}

/// Offset of row `row` (an index over all axes but the last) for the given strides.
pub(crate) fn row_offset(row: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut r = row;
    let mut off = 0;
    for i in (0..dims.len().saturating_sub(1)).rev() {
        let d = dims[i];
        off += (r % d) * strides[i];
        r /= d;
    }
    off
}

/// Elements below which an output buffer is zeroed on the calling thread.
const PARALLEL_ZERO_MIN: usize = 1 << 16;
/// Elements zeroed per task when a large buffer is zeroed on the rayon pool.
const ZERO_CHUNK: usize = 1 << 14;

/// A zero-filled output buffer of `n` elements. Large buffers are filled on the rayon pool:
/// the allocator hands back recycled (dirty) memory, and a single-threaded memset of a
/// multi-megabyte activation leaves the other workers idle. The contents are the same
/// either way.
pub fn zeroed(n: usize, par: Parallelism) -> Vec<f32> {
    use rayon::prelude::*;
    if par != Parallelism::Rayon || n < PARALLEL_ZERO_MIN || rayon::current_num_threads() < 2 {
        return vec![0f32; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(ZERO_CHUNK)
        .for_each(|c| {
            for x in c {
                x.write(0.0);
            }
        });
    // SAFETY: the first `n` elements were all initialised above.
    unsafe { v.set_len(n) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile runs exactly once, in pools of 1, 2 (claimed from both ends) and 3
    /// threads, for counts around the pool sizes; with two threads the calling thread's tiles
    /// are a prefix of the range (it claims from the front) when the other thread takes any.
    #[test]
    fn every_tile_runs_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("test thread pool");
            for tiles in [0, 1, 2, 3, 7, 64, 1000] {
                let runs: Vec<AtomicUsize> = (0..tiles).map(|_| AtomicUsize::new(0)).collect();
                let by: Vec<AtomicUsize> = (0..tiles).map(|_| AtomicUsize::new(0)).collect();
                pool.install(|| {
                    let me = rayon::current_thread_index();
                    for_each_tile(tiles, Parallelism::Rayon, |t| {
                        // A little work, so that the other thread takes part.
                        let mut x = t as f64;
                        for _ in 0..2000 {
                            x = std::hint::black_box(x.sqrt() + 1.0);
                        }
                        runs[t].fetch_add(1, Ordering::Relaxed);
                        let caller = rayon::current_thread_index() == me;
                        by[t].store(usize::from(caller), Ordering::Relaxed);
                    });
                });
                for (t, r) in runs.iter().enumerate() {
                    assert_eq!(
                        r.load(Ordering::Relaxed),
                        1,
                        "tile {t} of {tiles}, {threads} threads"
                    );
                }
                if threads == 2 {
                    let mine: Vec<usize> = by.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                    // Once a tile of the other thread's appears, no later one is the caller's.
                    let first_other = mine.iter().position(|&b| b == 0).unwrap_or(tiles);
                    assert!(
                        mine[first_other..].iter().all(|&b| b == 0),
                        "{tiles} tiles: the other thread ran tile {first_other}, the caller a later one"
                    );
                }
            }
        }
    }

    #[test]
    fn zeroed_buffers_are_zero_in_any_pool() {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("test thread pool");
            for n in [
                0,
                1,
                PARALLEL_ZERO_MIN - 1,
                PARALLEL_ZERO_MIN,
                3 * ZERO_CHUNK + 5 + PARALLEL_ZERO_MIN,
            ] {
                for par in [Parallelism::Sequential, Parallelism::Rayon] {
                    let v = pool.install(|| zeroed(n, par));
                    assert_eq!(v.len(), n);
                    assert!(
                        v.iter().all(|x| x.to_bits() == 0),
                        "n={n} threads={threads}"
                    );
                }
            }
        }
    }
}
