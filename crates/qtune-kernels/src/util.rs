//! Small helpers shared by the kernels: tiling over rayon, raw output pointers for
//! disjoint tile writes, shape and stride arithmetic.

use crate::Parallelism;
use rayon::prelude::*;

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
        (0..tiles).into_par_iter().for_each(f)
    } else {
        (0..tiles).for_each(f)
    }
}

/// Runs `f(chunk_index, chunk)` over fixed-size chunks of `data`.
pub(crate) fn for_each_chunk_mut<T, F>(data: &mut [T], chunk: usize, par: Parallelism, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk = chunk.max(1);
    match par {
        Parallelism::Rayon if data.len() > chunk => data
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c)),
        _ => data
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c)),
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
