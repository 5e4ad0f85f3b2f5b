//! Data movement, generic over the element type: ONNX `Transpose`, `Slice` (with starts,
//! steps already normalised by the caller), `Concat`, `Gather` (indices already normalised
//! to `0..dims[axis]`), `Expand` and `Where` (numpy broadcasting, opset 9-22).
//!
//! Shapes are merged into the fewest strided axes first, and the innermost axis is copied
//! with `copy_from_slice` when contiguous.

use crate::binary::broadcast_shape;
use crate::util::{broadcast_strides, merge_axes, numel, row_offset, strides};

/// The shape contract of a transpose: `perm` is a permutation of `0..dims.len()`, the input
/// holds `dims`' elements and the output as many.
pub(crate) fn check_transpose(in_len: usize, dims: &[usize], perm: &[usize], out_len: usize) {
    assert_eq!(perm.len(), dims.len(), "transpose: perm length");
    let mut seen = vec![false; dims.len()];
    for &p in perm {
        assert!(
            p < dims.len() && !seen[p],
            "transpose: {perm:?} is not a permutation"
        );
        seen[p] = true;
    }
    assert_eq!(in_len, numel(dims), "transpose: input length");
    assert_eq!(out_len, in_len, "transpose: output length");
}

/// ONNX `Transpose`: `out` has dims `dims[perm[i]]`.
///
/// # Panics
/// Shape contract: panics if `perm` is not a permutation of `0..dims.len()` or a slice
/// length does not match `dims`.
pub fn transpose<T: Copy>(input: &[T], dims: &[usize], perm: &[usize], out: &mut [T]) {
    check_transpose(input.len(), dims, perm, out.len());
    if out.is_empty() {
        return;
    }
    let in_st = strides(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let src: Vec<usize> = perm.iter().map(|&p| in_st[p]).collect();
    let dst = strides(&out_dims);
    let (md, ms) = merge_axes(&out_dims, &[src, dst]);
    let src = &ms[0];
    let inner = *md.last().unwrap_or(&1);
    let is = *src.last().unwrap_or(&1);
    if md.len() >= 2 && is != 1 {
        // Tile the last two merged axes so reads and writes both stay in cache.
        transpose_tiled(input, &md, src, out);
        return;
    }
    for (r, orow) in out.chunks_exact_mut(inner).enumerate() {
        let off = row_offset(r, &md, src);
        if is == 1 {
            orow.copy_from_slice(&input[off..off + inner]);
        } else {
            for (i, o) in orow.iter_mut().enumerate() {
                *o = input[off + i * is];
            }
        }
    }
}

/// Transpose where the innermost output axis is strided in the input: walk the last two
/// output axes in 32x32 blocks.
fn transpose_tiled<T: Copy>(input: &[T], md: &[usize], src: &[usize], out: &mut [T]) {
    const B: usize = 32;
    let r = md.len();
    let (rows, cols) = (md[r - 2], md[r - 1]);
    let (s_row, s_col) = (src[r - 2], src[r - 1]);
    let outer_dims = &md[..r - 2];
    let plane = rows * cols;
    for (pi, o) in out.chunks_exact_mut(plane).enumerate() {
        let mut base = 0;
        let mut rem = pi;
        for i in (0..outer_dims.len()).rev() {
            base += (rem % outer_dims[i]) * src[i];
            rem /= outer_dims[i];
        }
        for r0 in (0..rows).step_by(B) {
            for c0 in (0..cols).step_by(B) {
                for rr in r0..(r0 + B).min(rows) {
                    let orow = &mut o[rr * cols..(rr + 1) * cols];
                    let roff = base + rr * s_row;
                    for (cc, ov) in orow
                        .iter_mut()
                        .enumerate()
                        .take((c0 + B).min(cols))
                        .skip(c0)
                    {
                        *ov = input[roff + cc * s_col];
                    }
                }
            }
        }
    }
}

/// Strided copy for ONNX `Slice`, every axis given: `out[i_0, .., i_k] =
/// input[starts[0] + i_0 * steps[0], ..]`. `out_dims` is the output shape (the caller
/// computes it from the normalised starts, ends and steps); steps may be negative.
///
/// # Panics
/// Shape contract: panics if a slice length does not match its dims, an argument has the
/// wrong rank, or an addressed element lies outside the input.
pub fn slice<T: Copy>(
    input: &[T],
    dims: &[usize],
    starts: &[usize],
    steps: &[isize],
    out_dims: &[usize],
    out: &mut [T],
) {
    let r = dims.len();
    assert!(
        starts.len() == r && steps.len() == r && out_dims.len() == r,
        "slice: rank mismatch"
    );
    assert_eq!(input.len(), numel(dims), "slice: input length");
    assert_eq!(out.len(), numel(out_dims), "slice: output length");
    if out.is_empty() {
        return;
    }
    if r == 0 {
        out[0] = input[0];
        return;
    }
    let st = strides(dims);
    for d in 0..r {
        if out_dims[d] > 0 {
            let last = starts[d] as isize + (out_dims[d] as isize - 1) * steps[d];
            assert!(
                starts[d] < dims[d] && last >= 0 && (last as usize) < dims[d],
                "slice: axis {d} out of range"
            );
        }
    }
    let base: usize = (0..r).map(|d| starts[d] * st[d]).sum();
    let step_st: Vec<isize> = (0..r).map(|d| steps[d] * st[d] as isize).collect();
    let inner = out_dims[r - 1].max(1);
    let inner_step = step_st[r - 1];
    for (ri, orow) in out.chunks_exact_mut(inner).enumerate() {
        let mut rem = ri;
        let mut off = base as isize;
        for d in (0..r - 1).rev() {
            off += (rem % out_dims[d]) as isize * step_st[d];
            rem /= out_dims[d];
        }
        if inner_step == 1 {
            let o = off as usize;
            orow.copy_from_slice(&input[o..o + inner]);
        } else {
            for (i, v) in orow.iter_mut().enumerate() {
                *v = input[(off + i as isize * inner_step) as usize];
            }
        }
    }
}

/// ONNX `Concat` along `axis`: `inputs` are `(data, dims)` pairs that agree on every other
/// axis; `out` has their shape with the `axis` extents summed.
///
/// # Panics
/// Shape contract: panics if shapes disagree or a slice length does not match its dims.
pub fn concat<T: Copy>(inputs: &[(&[T], &[usize])], axis: usize, out: &mut [T]) {
    let Some((_, first)) = inputs.first() else {
        assert!(out.is_empty(), "concat: no inputs but a non-empty output");
        return;
    };
    assert!(axis < first.len(), "concat: axis {axis} out of range");
    let outer: usize = first[..axis].iter().product();
    let mut total = 0;
    for (data, d) in inputs {
        assert!(d.len() == first.len(), "concat: rank mismatch");
        for i in 0..d.len() {
            assert!(
                i == axis || d[i] == first[i],
                "concat: dims {d:?} disagree with {first:?}"
            );
        }
        assert_eq!(data.len(), numel(d), "concat: input length");
        total += data.len();
    }
    assert_eq!(out.len(), total, "concat: output length");
    let mut o = 0;
    for k in 0..outer {
        for (data, _) in inputs {
            let chunk = data.len() / outer.max(1);
            out[o..o + chunk].copy_from_slice(&data[k * chunk..(k + 1) * chunk]);
            o += chunk;
        }
    }
}

/// ONNX `Gather` along `axis` with indices already normalised to `0..dims[axis]`: `out` has
/// dims `dims[..axis] ++ indices_shape ++ dims[axis + 1..]` (`indices` flattened).
///
/// # Panics
/// Shape contract: panics if an index is out of range or a slice length does not match.
pub fn gather<T: Copy>(input: &[T], dims: &[usize], axis: usize, indices: &[usize], out: &mut [T]) {
    assert!(axis < dims.len(), "gather: axis {axis} out of range");
    assert_eq!(input.len(), numel(dims), "gather: input length");
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let n = dims[axis];
    assert_eq!(
        out.len(),
        outer * indices.len() * inner,
        "gather: output length"
    );
    let mut o = 0;
    for k in 0..outer {
        for &i in indices {
            assert!(i < n, "gather: index {i} out of range for axis of {n}");
            let src = (k * n + i) * inner;
            out[o..o + inner].copy_from_slice(&input[src..src + inner]);
            o += inner;
        }
    }
}

/// Broadcast copy (ONNX `Expand` once the caller has computed the output shape as the
/// broadcast of the input shape and the requested shape).
///
/// # Panics
/// Shape contract: panics if `dims` does not broadcast to `out_dims` or a slice length does
/// not match.
pub fn expand<T: Copy>(input: &[T], dims: &[usize], out_dims: &[usize], out: &mut [T]) {
    assert_eq!(input.len(), numel(dims), "expand: input length");
    assert_eq!(out.len(), numel(out_dims), "expand: output length");
    if out.is_empty() {
        return;
    }
    let s = broadcast_strides(dims, out_dims);
    let (md, ms) = merge_axes(out_dims, &[s]);
    let inner = *md.last().unwrap_or(&1);
    let is = *ms[0].last().unwrap_or(&0);
    for (r, orow) in out.chunks_exact_mut(inner).enumerate() {
        let off = row_offset(r, &md, &ms[0]);
        if is == 1 {
            orow.copy_from_slice(&input[off..off + inner]);
        } else {
            orow.fill(input[off]);
        }
    }
}

/// ONNX `Where`: `out = cond ? x : y` with three-way numpy broadcasting; `out` has the
/// broadcast shape of all three.
///
/// # Panics
/// Shape contract: panics if the shapes do not broadcast or a slice length does not match.
pub fn where_select<T: Copy>(
    cond: &[bool],
    c_dims: &[usize],
    x: &[T],
    x_dims: &[usize],
    y: &[T],
    y_dims: &[usize],
    out: &mut [T],
) {
    let out_dims = broadcast_shape(c_dims, x_dims)
        .and_then(|d| broadcast_shape(&d, y_dims))
        .unwrap_or_else(|| {
            panic!("where_select: shapes {c_dims:?}, {x_dims:?}, {y_dims:?} do not broadcast")
        });
    assert_eq!(cond.len(), numel(c_dims), "where_select: cond length");
    assert_eq!(x.len(), numel(x_dims), "where_select: x length");
    assert_eq!(y.len(), numel(y_dims), "where_select: y length");
    assert_eq!(out.len(), numel(&out_dims), "where_select: output length");
    if out.is_empty() {
        return;
    }
    let sc = broadcast_strides(c_dims, &out_dims);
    let sx = broadcast_strides(x_dims, &out_dims);
    let sy = broadcast_strides(y_dims, &out_dims);
    let (md, ms) = merge_axes(&out_dims, &[sc, sx, sy]);
    let inner = *md.last().unwrap_or(&1);
    let (ic, ix, iy) = (
        *ms[0].last().unwrap_or(&0),
        *ms[1].last().unwrap_or(&0),
        *ms[2].last().unwrap_or(&0),
    );
    for (r, orow) in out.chunks_exact_mut(inner).enumerate() {
        let oc = row_offset(r, &md, &ms[0]);
        let ox = row_offset(r, &md, &ms[1]);
        let oy = row_offset(r, &md, &ms[2]);
        for (i, o) in orow.iter_mut().enumerate() {
            *o = if cond[oc + i * ic] {
                x[ox + i * ix]
            } else {
                y[oy + i * iy]
            };
        }
    }
}
