//! Numpy-style broadcasting binary arithmetic, ONNX `Add`, `Sub`, `Mul`, `Div`, `Pow`
//! (opset 7-22 multidirectional broadcasting) plus `Max`, `Min` (two inputs; variadic forms
//! are folded by the caller) for f32.
//!
//! Shapes are right-aligned and merged into the fewest axes that keep every operand
//! contiguous; the innermost merged axis is then a slice-window loop in one of three forms
//! (vector-vector, vector-scalar, scalar-vector). That covers the usual fast cases (same
//! shape, scalar, per-channel `[1, C, 1, 1]` against `[N, C, H, W]`, last-axis vector)
//! without special-casing them, and everything else goes through the same strided outer
//! loop.

use crate::Parallelism;
use crate::simd::dispatch;
use crate::util::{broadcast_strides, for_each_chunk_mut, merge_axes, numel, row_offset};

/// Output elements per parallel chunk (rounded to whole rows).
const CHUNK: usize = 16 * 1024;

/// A broadcasting binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a^b` (`powf`, with exact shortcuts described in [`binary`]).
    Pow,
    /// `max(a, b)`, NaN-propagating.
    Max,
    /// `min(a, b)`, NaN-propagating.
    Min,
}

#[inline(always)]
pub(crate) fn apply(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        }
        BinaryOp::Min => {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.min(b)
            }
        }
    }
}

/// Numpy broadcast of two shapes; `None` if they are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Inner-row kernels, one per operand layout. Monomorphised per op so each loop
/// vectorises.
macro_rules! row_kernels {
    ($vv:ident, $vs:ident, $sv:ident, $op:expr) => {
        dispatch! {
        fn $vv(o: &mut [f32], a: &[f32], b: &[f32]) {
            let f = $op;
            let n = o.len();
            for ((o, a), b) in o.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                *o = f(*a, *b);
            }
        }
        }
        dispatch! {
        fn $vs(o: &mut [f32], a: &[f32], b: f32) {
            let f = $op;
            let n = o.len();
            for (o, a) in o.iter_mut().zip(&a[..n]) {
                *o = f(*a, b);
            }
        }
        }
        dispatch! {
        fn $sv(o: &mut [f32], a: f32, b: &[f32]) {
            let f = $op;
            let n = o.len();
            for (o, b) in o.iter_mut().zip(&b[..n]) {
                *o = f(a, *b);
            }
        }
        }
    };
}

/// In-place row kernels: `o = f(o, b)` with `b` a vector or a scalar, and `o = f(a, o)` with
/// `a` a vector or a scalar (the same formula as the out-of-place kernels, so the same bits).
macro_rules! in_place_kernels {
    ($lv:ident, $ls:ident, $rv:ident, $rs:ident, $op:expr) => {
        dispatch! {
        fn $lv(o: &mut [f32], b: &[f32]) {
            let f = $op;
            let n = o.len();
            for (o, b) in o.iter_mut().zip(&b[..n]) {
                *o = f(*o, *b);
            }
        }
        }
        dispatch! {
        fn $ls(o: &mut [f32], b: f32) {
            let f = $op;
            for o in o.iter_mut() {
                *o = f(*o, b);
            }
        }
        }
        dispatch! {
        fn $rv(a: &[f32], o: &mut [f32]) {
            let f = $op;
            let n = o.len();
            for (o, a) in o.iter_mut().zip(&a[..n]) {
                *o = f(*a, *o);
            }
        }
        }
        dispatch! {
        fn $rs(a: f32, o: &mut [f32]) {
            let f = $op;
            for o in o.iter_mut() {
                *o = f(a, *o);
            }
        }
        }
    };
}

#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    // NaN-propagating max written as selects so it vectorises.
    if a.is_nan() || b > a { b } else { a }
}
#[inline(always)]
fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b < a { b } else { a }
}

row_kernels!(add_vv, add_vs, add_sv, |a: f32, b: f32| a + b);
row_kernels!(sub_vv, sub_vs, sub_sv, |a: f32, b: f32| a - b);
row_kernels!(mul_vv, mul_vs, mul_sv, |a: f32, b: f32| a * b);
row_kernels!(div_vv, div_vs, div_sv, |a: f32, b: f32| a / b);
row_kernels!(max_vv, max_vs, max_sv, max_nan);
row_kernels!(min_vv, min_vs, min_sv, min_nan);

in_place_kernels!(add_lv, add_ls, add_rv, add_rs, |a: f32, b: f32| a + b);
in_place_kernels!(sub_lv, sub_ls, sub_rv, sub_rs, |a: f32, b: f32| a - b);
in_place_kernels!(mul_lv, mul_ls, mul_rv, mul_rs, |a: f32, b: f32| a * b);
in_place_kernels!(div_lv, div_ls, div_rv, div_rs, |a: f32, b: f32| a / b);
in_place_kernels!(max_lv, max_ls, max_rv, max_rs, max_nan);
in_place_kernels!(min_lv, min_ls, min_rv, min_rs, min_nan);

/// One output row: `a` and `b` are either vectors (`sa`/`sb == 1`) or scalars (stride 0).
#[inline]
fn row(op: BinaryOp, o: &mut [f32], a: &[f32], sa: usize, b: &[f32], sb: usize) {
    macro_rules! go {
        ($vv:ident, $vs:ident, $sv:ident) => {
            match (sa, sb) {
                (1, 1) => $vv(o, a, b),
                (1, 0) => $vs(o, a, b[0]),
                (0, 1) => $sv(o, a[0], b),
                _ => {
                    let (x, y) = (a[0], b[0]);
                    let mut t = [0.0f32];
                    $vv(&mut t, &[x], &[y]);
                    o.fill(t[0]);
                }
            }
        };
    }
    match op {
        BinaryOp::Add => go!(add_vv, add_vs, add_sv),
        BinaryOp::Sub => go!(sub_vv, sub_vs, sub_sv),
        BinaryOp::Mul => go!(mul_vv, mul_vs, mul_sv),
        BinaryOp::Div => go!(div_vv, div_vs, div_sv),
        BinaryOp::Max => go!(max_vv, max_vs, max_sv),
        BinaryOp::Min => go!(min_vv, min_vs, min_sv),
        BinaryOp::Pow => {
            if sb == 0 && b[0] == 2.0 {
                if sa == 1 {
                    for (o, a) in o.iter_mut().zip(a) {
                        *o = *a * *a;
                    }
                } else {
                    o.fill(a[0] * a[0]);
                }
            } else if sb == 0 && b[0] == 1.0 {
                if sa == 1 {
                    o.copy_from_slice(&a[..o.len()]);
                } else {
                    o.fill(a[0]);
                }
            } else {
                for (i, o) in o.iter_mut().enumerate() {
                    *o = a[i * sa].powf(b[i * sb]);
                }
            }
        }
    }
}

/// `out = a op b` with numpy broadcasting; `out` has the shape
/// `broadcast_shape(a_dims, b_dims)`.
///
/// `Pow` with a scalar exponent of exactly 2 is computed as `a * a` (exact, and what
/// ONNX Runtime does); exponent 1 copies; every other case calls `powf`.
///
/// # Panics
/// Shape contract: panics if the shapes do not broadcast or a slice length does not match
/// its dims.
pub fn binary(
    op: BinaryOp,
    a: &[f32],
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    out: &mut [f32],
    par: Parallelism,
) {
    let out_dims = broadcast_shape(a_dims, b_dims)
        .unwrap_or_else(|| panic!("binary: shapes {a_dims:?} and {b_dims:?} do not broadcast"));
    assert_eq!(a.len(), numel(a_dims), "binary: a length");
    assert_eq!(b.len(), numel(b_dims), "binary: b length");
    assert_eq!(out.len(), numel(&out_dims), "binary: output length");
    if out.is_empty() {
        return;
    }
    let sa = broadcast_strides(a_dims, &out_dims);
    let sb = broadcast_strides(b_dims, &out_dims);
    let (dims, st) = merge_axes(&out_dims, &[sa, sb]);
    let (sa, sb) = (&st[0], &st[1]);
    let inner = *dims.last().unwrap_or(&1);
    let (ia, ib) = (*sa.last().unwrap_or(&0), *sb.last().unwrap_or(&0));
    let rows_per_chunk = (CHUNK / inner).max(1);
    for_each_chunk_mut(out, rows_per_chunk * inner, par, |ci, o| {
        for (r, orow) in o.chunks_exact_mut(inner).enumerate() {
            let rowi = ci * rows_per_chunk + r;
            let oa = row_offset(rowi, &dims, sa);
            let ob = row_offset(rowi, &dims, sb);
            row(op, orow, &a[oa..], ia, &b[ob..], ib);
        }
    });
}

dispatch! {
/// `o = o * o`.
fn square(o: &mut [f32]) {
    for v in o.iter_mut() {
        *v *= *v;
    }
}
}

/// Which operand of [`binary_in_place`] is overwritten with the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InPlace {
    /// The left operand `a` (it has the output's dims): `a = a op b`.
    Left,
    /// The right operand `b` (it has the output's dims): `b = a op b`.
    Right,
}

/// One output row in place: `o` is the overwritten operand's row, `other` the other operand's
/// (a vector with stride 1 or a scalar with stride 0).
#[inline]
fn row_in_place(op: BinaryOp, side: InPlace, o: &mut [f32], other: &[f32], so: usize) {
    macro_rules! go {
        ($lv:ident, $ls:ident, $rv:ident, $rs:ident) => {
            match (side, so) {
                (InPlace::Left, 1) => $lv(o, other),
                (InPlace::Left, _) => $ls(o, other[0]),
                (InPlace::Right, 1) => $rv(other, o),
                (InPlace::Right, _) => $rs(other[0], o),
            }
        };
    }
    match op {
        BinaryOp::Add => go!(add_lv, add_ls, add_rv, add_rs),
        BinaryOp::Sub => go!(sub_lv, sub_ls, sub_rv, sub_rs),
        BinaryOp::Mul => go!(mul_lv, mul_ls, mul_rv, mul_rs),
        BinaryOp::Div => go!(div_lv, div_ls, div_rv, div_rs),
        BinaryOp::Max => go!(max_lv, max_ls, max_rv, max_rs),
        BinaryOp::Min => go!(min_lv, min_ls, min_rv, min_rs),
        // Same shortcuts as `row`: exponent 2 is `a * a` (LayerNorm's `Pow(d, 2)`), exponent 1
        // a copy.
        BinaryOp::Pow if side == InPlace::Left && so == 0 && other[0] == 2.0 => square(o),
        BinaryOp::Pow if side == InPlace::Left && so == 0 && other[0] == 1.0 => {}
        BinaryOp::Pow => {
            for (i, o) in o.iter_mut().enumerate() {
                let x = other[i * so];
                *o = match side {
                    InPlace::Left => o.powf(x),
                    InPlace::Right => x.powf(*o),
                };
            }
        }
    }
}

/// [`binary`] written over one of its operands, `target`, which must have the output's dims
/// (`other` broadcasts to them): `target = target op other` ([`InPlace::Left`]) or
/// `target = other op target` ([`InPlace::Right`]). Bit-identical to [`binary`]; saves the output buffer and its
/// zero-fill when the executor holds the last reference to that operand.
///
/// # Panics
/// Shape contract: panics if the shapes do not broadcast, the overwritten operand's dims are
/// not the output's, or a slice length does not match its dims.
pub fn binary_in_place(
    op: BinaryOp,
    side: InPlace,
    target: &mut [f32],
    target_dims: &[usize],
    other: &[f32],
    other_dims: &[usize],
    par: Parallelism,
) {
    let out_dims = broadcast_shape(target_dims, other_dims).unwrap_or_else(|| {
        panic!("binary_in_place: shapes {target_dims:?} and {other_dims:?} do not broadcast")
    });
    assert_eq!(
        out_dims.as_slice(),
        target_dims,
        "binary_in_place: the overwritten operand {target_dims:?} is not the output {out_dims:?}"
    );
    assert_eq!(
        target.len(),
        numel(target_dims),
        "binary_in_place: target length"
    );
    assert_eq!(
        other.len(),
        numel(other_dims),
        "binary_in_place: other length"
    );
    if target.is_empty() {
        return;
    }
    let so = broadcast_strides(other_dims, &out_dims);
    let own = crate::util::strides(&out_dims);
    let (dims, st) = merge_axes(&out_dims, &[own, so]);
    let so = &st[1];
    let inner = *dims.last().unwrap_or(&1);
    let io = *so.last().unwrap_or(&0);
    let rows_per_chunk = (CHUNK / inner).max(1);
    for_each_chunk_mut(target, rows_per_chunk * inner, par, |ci, o| {
        for (r, orow) in o.chunks_exact_mut(inner).enumerate() {
            let rowi = ci * rows_per_chunk + r;
            let off = row_offset(rowi, &dims, so);
            row_in_place(op, side, orow, &other[off..], io);
        }
    });
}
