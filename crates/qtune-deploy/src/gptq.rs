//! GPTQ for the weight-only modes (`--q_method gptq | gptq_clip`).
//!
//! Reference: E. Frantar, S. Ashkboos, T. Hoefler, D. Alistarh, "GPTQ:
//! Accurate Post-Training Quantization for Generative Pre-trained
//! Transformers" (ICLR 2023), Algorithm 1. For a layer `Y = X W` with the
//! weight as `[N, K]` rows (one per output channel) and calibration inputs
//! `X` (`[rows, K]`), every row `w` minimises `(w - q)^T H (w - q)` with
//! `H = X^T X` (the factor 2 of the paper does not change the minimiser).
//! Columns are quantized one at a time, in order; after column `i` the
//! error `(w_i - q_i) / U_ii` is spread over the columns not yet quantized
//! through row `i` of `U`, the upper Cholesky factor of `H^-1`
//! (`H^-1 = U^T U`), which is the least-squares update of the remaining
//! weights given the fixed ones (checked against that closed form in the
//! tests). As in the paper:
//!
//! * dampening: `H + lambda I` with `lambda = 0.01 mean(diag H)` (raised
//!   tenfold, up to 5 times, if the factorisation still fails); an input
//!   that is always zero (`H_ii = 0`) gets `H_ii = 1`, so its weight is
//!   rounded without moving the others;
//! * lazy batch updates: blocks of 128 columns (fewer when the group does
//!   not divide or is not divided by 128), the columns after the block
//!   updated once per block. The subtractions reaching each weight are the
//!   same, in the same order, as in the column-at-a-time form
//!   ([`gptq_reference`]), so both give the same bits;
//! * groups: the grid (scale, zero point) of a group is fixed when its first
//!   column is reached, from the group's weights as updated so far;
//! * act-order: columns in order of decreasing `H_ii`. The export's groups
//!   are consecutive columns in the original order (the chip's `A16MatMul`
//!   and ONNX Runtime's `MatMulNBits` know no group index), so with
//!   act-order every grid is fixed beforehand from the original weights
//!   (the "static groups" variant).
//!
//! The grids follow the layer's `Scheme` (TPU-MLIR's min / max rule, or
//! the clip search with `gptq_clip`), with the scale rounded to the float
//! type first. `U` comes from one Cholesky factorisation of the reversed
//! matrix: if `P` reverses the order, `P H P = L L^T` gives
//! `U = P L^-1 P`.
//!
//! Everything runs on one thread in a fixed order, so the codes do not
//! depend on the thread count.

use std::collections::BTreeMap;
use std::sync::Arc;

use qtune_ir::FloatFormat;

use crate::weight_only::{
    Grid, HBlock, QuantizedWeight, Scheme, WeightOnly, group_grid, group_grid_output,
};

/// `X^T X` of a layer's calibration inputs, `K x K` row-major, summed in
/// f64 over `rows` rows of `K` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Hessian {
    pub k: usize,
    pub rows: u64,
    pub sum: Vec<f64>,
    /// The sum of the rows (`K` values), for the mean input.
    pub row_sum: Vec<f64>,
    /// The sum of the absolute values of the rows (`K` values), for the
    /// mean input magnitude per channel (AWQ's statistic, [`crate::awq`]).
    pub abs_sum: Vec<f64>,
}

impl Hessian {
    pub fn new(k: usize) -> Self {
        Hessian {
            k,
            rows: 0,
            sum: vec![0.0; k * k],
            row_sum: vec![0.0; k],
            abs_sum: vec![0.0; k],
        }
    }

    /// Adds the rows of `x` (`[rows, K]`, row-major) one product at a time
    /// in f64: the slow form, for tests and small inputs.
    pub fn add_rows(&mut self, x: &[f32]) {
        let k = self.k;
        for row in x.chunks_exact(k) {
            for ((s, t), &a) in self.row_sum.iter_mut().zip(&mut self.abs_sum).zip(row) {
                *s += f64::from(a);
                *t += f64::from(a.abs());
            }
            for (i, &a) in row.iter().enumerate() {
                let a = f64::from(a);
                for (s, &b) in self.sum[i * k..(i + 1) * k].iter_mut().zip(row) {
                    *s += a * f64::from(b);
                }
            }
            self.rows += 1;
        }
    }

    /// Adds rows `x` (`[rows, K]`) whose Gram matrix `x^T x` was computed
    /// elsewhere (e.g. by a GEMM in f32).
    pub fn add_gram(&mut self, gram: &[f32], x: &[f32]) {
        for (s, &g) in self.sum.iter_mut().zip(gram) {
            *s += f64::from(g);
        }
        for row in x.chunks_exact(self.k) {
            for ((s, t), &a) in self.row_sum.iter_mut().zip(&mut self.abs_sum).zip(row) {
                *s += f64::from(a);
                *t += f64::from(a.abs());
            }
            self.rows += 1;
        }
    }

    /// The mean input row (zeros before any row).
    pub fn mean(&self) -> Vec<f64> {
        // Row counts stay far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let n = self.rows.max(1) as f64;
        self.row_sum.iter().map(|s| s / n).collect()
    }

    /// The mean absolute input per channel (zeros before any row).
    pub fn mean_abs(&self) -> Vec<f64> {
        // Row counts stay far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let n = self.rows.max(1) as f64;
        self.abs_sum.iter().map(|s| s / n).collect()
    }

    /// The Hessian of the inputs `x / s` (channel `c` divided by `s[c]`):
    /// `S^-1 H S^-1`, the sums divided alike.
    pub fn scaled_inputs(&self, s: &[f64]) -> Hessian {
        let k = self.k;
        let mut out = self.clone();
        for i in 0..k {
            for j in 0..k {
                out.sum[i * k + j] = self.sum[i * k + j] / (s[i] * s[j]);
            }
            out.row_sum[i] = self.row_sum[i] / s[i];
            out.abs_sum[i] = self.abs_sum[i] / s[i];
        }
        out
    }
}

/// The Hessians of a model's weight-only layers, by the name of the weight
/// value (layers that read the same input share one).
pub type Hessians = BTreeMap<String, Arc<Hessian>>;

/// GPTQ settings beyond [`WeightOnly`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct GptqOptions {
    /// Columns in order of decreasing Hessian diagonal.
    pub act_order: bool,
    /// Grids from the clip search instead of the min / max rule.
    pub clip_grid: bool,
    /// With `clip_grid`: the clip search minimises the group's output
    /// error over its block of `H` (the undampened Hessian in the original
    /// column order) instead of its weight error.
    pub output_clip: bool,
    /// `lambda / mean(diag H)`.
    pub damp: f64,
    /// Columns per lazy batch (adjusted to the group, see the module docs).
    pub block: usize,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            act_order: false,
            clip_grid: false,
            output_clip: false,
            damp: 0.01,
            block: 128,
        }
    }
}

/// A dot product with four partial sums in a fixed order (deterministic,
/// and faster than one running sum).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0f64; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            s[l] += a[c * 4 + l] * b[c * 4 + l];
        }
    }
    let mut tail = 0.0;
    for i in chunks * 4..a.len() {
        tail += a[i] * b[i];
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// Lower Cholesky factor of the symmetric `a` (`k x k`, lower triangle
/// read), in place; the upper triangle is zeroed. `None` when `a` is not
/// positive definite.
fn cholesky_lower(a: &mut [f64], k: usize) -> Option<()> {
    for j in 0..k {
        let (upto, below) = a.split_at_mut((j + 1) * k);
        let row_j = &mut upto[j * k..];
        let d = row_j[j] - dot(&row_j[..j], &row_j[..j]);
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        row_j[j] = d.sqrt();
        row_j[j + 1..].fill(0.0);
        let row_j = &*row_j;
        for row_i in below.chunks_exact_mut(k) {
            row_i[j] = (row_i[j] - dot(&row_i[..j], &row_j[..j])) / row_j[j];
        }
    }
    Some(())
}

/// `L^-1` of a lower-triangular `l` (`k x k`), row by row from `L M = I`:
/// `M_i = (e_i - sum_{p<i} L_ip M_p) / L_ii`.
fn lower_inverse(l: &[f64], k: usize) -> Vec<f64> {
    let mut m = vec![0f64; k * k];
    for i in 0..k {
        let (prev, cur) = m.split_at_mut(i * k);
        let row = &mut cur[..k];
        row[i] = 1.0;
        for p in 0..i {
            let c = l[i * k + p];
            let mp = &prev[p * k..p * k + p + 1];
            for (r, &v) in row[..=p].iter_mut().zip(mp) {
                *r -= c * v;
            }
        }
        let d = l[i * k + i];
        for r in &mut row[..=i] {
            *r /= d;
        }
    }
    m
}

/// The upper Cholesky factor `U` of `h^-1` (`h^-1 = U^T U`), or `None` when
/// `h` is not positive definite.
pub(crate) fn inverse_cholesky_upper(h: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut rev = vec![0f64; k * k];
    for a in 0..k {
        for b in 0..k {
            rev[a * k + b] = h[(k - 1 - a) * k + (k - 1 - b)];
        }
    }
    cholesky_lower(&mut rev, k)?;
    let m = lower_inverse(&rev, k);
    let mut u = vec![0f64; k * k];
    for a in 0..k {
        for b in 0..k {
            u[a * k + b] = m[(k - 1 - a) * k + (k - 1 - b)];
        }
    }
    Some(u)
}

/// What both forms share: the column order and `U` of the dampened,
/// permuted Hessian.
struct Prepared {
    /// Position -> original column.
    perm: Vec<usize>,
    u: Vec<f64>,
}

fn prepare(h: &[f64], k: usize, opts: GptqOptions) -> Result<Prepared, String> {
    if h.len() != k * k {
        return Err(format!(
            "the Hessian holds {} values, expected {k} x {k}",
            h.len()
        ));
    }
    if let Some(i) = h.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "the Hessian has a value that is not finite at ({}, {}) (calibration inputs with inf / NaN)",
            i / k,
            i % k
        ));
    }
    let diag: Vec<f64> = (0..k)
        .map(|i| {
            if h[i * k + i] > 0.0 {
                h[i * k + i]
            } else {
                1.0
            }
        })
        .collect();
    let mut perm: Vec<usize> = (0..k).collect();
    if opts.act_order {
        // Stable: equal diagonals keep their original order.
        perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    }
    // k >= 1 here; the cast only feeds a mean.
    #[allow(clippy::cast_precision_loss)]
    let mean = diag.iter().sum::<f64>() / k as f64;
    let mut damp = opts.damp * mean;
    let mut hp = vec![0f64; k * k];
    for _ in 0..6 {
        for a in 0..k {
            for b in 0..k {
                hp[a * k + b] = if a == b {
                    diag[perm[a]] + damp
                } else {
                    h[perm[a] * k + perm[b]]
                };
            }
        }
        if let Some(u) = inverse_cholesky_upper(&hp, k) {
            return Ok(Prepared { perm, u });
        }
        damp *= 10.0;
    }
    Err(format!(
        "the dampened Hessian ({k} x {k}) is not positive definite even with lambda = {damp:e}"
    ))
}

/// The block length: `block` when the group divides it or is a multiple
/// of it (so a group never starts inside a block while its columns also
/// lie after the block), else the group.
fn block_len(block: usize, g: usize) -> usize {
    let b = block.max(1);
    if g.is_multiple_of(b) || b.is_multiple_of(g) {
        b
    } else {
        g
    }
}

/// The state both forms carry: the weights as `[K, N]` in column order
/// (row `a` = column `perm[a]` of every output channel), in f64.
struct State {
    n: usize,
    k: usize,
    g: usize,
    scheme: Scheme,
    clip: bool,
    format: FloatFormat,
    dynamic: bool,
    perm: Vec<usize>,
    w: Vec<f64>,
    /// By (output channel, group).
    grids: Vec<Option<Grid>>,
    codes: Vec<f32>,
    /// The Hessian the output-error clip search weighs groups with.
    output_h: Option<Vec<f64>>,
}

/// The grid of the group of columns `c0..c0 + vals.len()`: the clip search
/// on the output error when `h` is given, else [`group_grid`].
fn grid_of(
    vals: &[f32],
    scheme: Scheme,
    clip: bool,
    format: FloatFormat,
    h: Option<&[f64]>,
    k: usize,
    c0: usize,
) -> Grid {
    match h {
        Some(h) if clip => group_grid_output(vals, scheme, format, HBlock { h, k, c0 }),
        _ => group_grid(vals, scheme, clip, format),
    }
}

impl State {
    #[allow(clippy::too_many_arguments)]
    fn new(
        wt: &[f32],
        n: usize,
        k: usize,
        bits: u32,
        wo: WeightOnly,
        opts: GptqOptions,
        format: FloatFormat,
        perm: Vec<usize>,
        h: Option<&[f64]>,
    ) -> State {
        let (scheme, g) = Scheme::of(wt, k, bits, wo);
        let g = g.max(1);
        let mut w = vec![0f64; k * n];
        for (a, &c) in perm.iter().enumerate() {
            for r in 0..n {
                w[a * n + r] = f64::from(wt[r * k + c]);
            }
        }
        let groups = k / g;
        let output_h = h.filter(|_| opts.output_clip).map(<[f64]>::to_vec);
        let mut grids = vec![None; n * groups];
        // With act-order the grids are fixed from the original weights
        // (rows in parallel: each row's grids depend on that row only).
        if opts.act_order {
            use rayon::prelude::*;
            let hv = output_h.as_deref();
            grids = (0..n)
                .into_par_iter()
                .flat_map_iter(|r| {
                    (0..groups).map(move |grp| {
                        let vals = &wt[r * k + grp * g..r * k + (grp + 1) * g];
                        Some(grid_of(
                            vals,
                            scheme,
                            opts.clip_grid,
                            format,
                            hv,
                            k,
                            grp * g,
                        ))
                    })
                })
                .collect();
        }
        State {
            n,
            k,
            g,
            scheme,
            clip: opts.clip_grid,
            format,
            dynamic: !opts.act_order,
            perm,
            w,
            grids,
            codes: vec![0.0; n * k],
            output_h,
        }
    }

    /// Quantizes position `a` (its grids fixed first if a group starts
    /// there) and writes `(w - q) / d` into `err`.
    fn quantize_column(&mut self, a: usize, d: f64, err: &mut [f64]) {
        let (n, k, g) = (self.n, self.k, self.g);
        let groups = k / g;
        if self.dynamic && a.is_multiple_of(g) {
            // Identity order: positions a..a+g are the group's columns.
            let mut vals = vec![0f32; g];
            for r in 0..n {
                for (t, v) in vals.iter_mut().enumerate() {
                    // The updated weight, back in the weight's type.
                    #[allow(clippy::cast_possible_truncation)]
                    let x = self.w[(a + t) * n + r] as f32;
                    *v = x;
                }
                self.grids[r * groups + a / g] = Some(grid_of(
                    &vals,
                    self.scheme,
                    self.clip,
                    self.format,
                    self.output_h.as_deref(),
                    k,
                    a,
                ));
            }
        }
        let c = self.perm[a];
        let grp = c / g;
        for (r, e) in err.iter_mut().enumerate().take(n) {
            let grid = self.grids[r * groups + grp].expect("grid fixed before its columns");
            let w = self.w[a * n + r];
            #[allow(clippy::cast_possible_truncation)]
            let code = grid.code(w as f32);
            let q = f64::from((code - grid.zero_point) * grid.scale);
            self.codes[r * k + c] = code;
            *e = (w - q) / d;
        }
    }

    fn finish(self) -> QuantizedWeight {
        let groups = self.k / self.g;
        let mut scale = Vec::with_capacity(self.n * groups);
        let mut zero_point = Vec::with_capacity(self.n * groups);
        for grid in &self.grids {
            let grid = grid.expect("every group quantized");
            scale.push(grid.scale);
            zero_point.push(grid.zero_point);
        }
        QuantizedWeight::from_parts(self.scheme, &self.codes, scale, &zero_point, self.g)
    }
}

/// The float weight that, fed the inputs the quantized model gives a
/// layer, best reproduces the float model's output (the asymmetric target
/// of GPTAQ, Li et al. 2025): with `X_q` the layer inputs once the earlier
/// layers are quantized and `X_f` the float model's, each output channel
/// `w` (a row of `wt`, `[N, K]`) becomes
/// `argmin ||X_f w - X_q v||^2 + lambda ||v - w||^2
///  = (H + lambda I)^-1 (C w + lambda w)`, `H = X_q^T X_q` (`h`),
/// `C = X_q^T X_f` (`cross`, `K x K` row-major), `lambda = damp mean(diag H)`.
/// Quantizing that weight with GPTQ on `H` then minimises
/// `||X_f w - X_q q||^2`: the least-squares residual is orthogonal to `X_q`,
/// so the two errors add. With `X_q = X_f` the weight is unchanged.
pub fn asymmetric_target(
    h: &Hessian,
    cross: &[f64],
    wt: &[f32],
    n: usize,
    damp: f64,
) -> Result<Vec<f32>, String> {
    let k = h.k;
    if cross.len() != k * k || wt.len() != n * k {
        return Err(format!(
            "asymmetric target: {} cross products and {} weights for K = {k}, N = {n}",
            cross.len(),
            wt.len()
        ));
    }
    let diag: Vec<f64> = (0..k)
        .map(|i| {
            let d = h.sum[i * k + i];
            if d > 0.0 { d } else { 1.0 }
        })
        .collect();
    // k >= 1 here; the cast only feeds a mean.
    #[allow(clippy::cast_precision_loss)]
    let lambda = damp * diag.iter().sum::<f64>() / k.max(1) as f64;
    let mut a = h.sum.clone();
    for i in 0..k {
        a[i * k + i] = diag[i] + lambda;
    }
    cholesky_lower(&mut a, k).ok_or_else(|| {
        format!("asymmetric target: H + lambda I ({k} x {k}) is not positive definite")
    })?;
    // L^T, so that both substitutions read rows.
    let mut lt = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            lt[j * k + i] = a[i * k + j];
        }
    }
    let mut out = Vec::with_capacity(n * k);
    let mut y = vec![0f64; k];
    for row in wt.chunks_exact(k) {
        let w: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        // r = C w + lambda w, then L y = r.
        for i in 0..k {
            let r = dot(&cross[i * k..(i + 1) * k], &w) + lambda * w[i];
            y[i] = (r - dot(&a[i * k..i * k + i], &y[..i])) / a[i * k + i];
        }
        // L^T x = y, from the last row up.
        for i in (0..k).rev() {
            let s = y[i] - dot(&lt[i * k + i + 1..(i + 1) * k], &y[i + 1..]);
            y[i] = s / lt[i * k + i];
        }
        // Back to the weight's type.
        #[allow(clippy::cast_possible_truncation)]
        out.extend(y.iter().map(|&v| v as f32));
    }
    Ok(out)
}

fn check(wt: &[f32], n: usize, k: usize, wo: WeightOnly) -> Result<(), String> {
    if wt.len() != n * k || k == 0 {
        return Err(format!(
            "the weight holds {} values, expected {n} x {k}",
            wt.len()
        ));
    }
    if wo.group_size > 0 && !k.is_multiple_of(wo.group_size) {
        return Err(format!(
            "group size {} does not divide K = {k}",
            wo.group_size
        ));
    }
    Ok(())
}

/// GPTQ of the weight `wt` (`[N, K]`) with the input Hessian `h` (`K x K`),
/// lazy-batch form (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn gptq(
    wt: &[f32],
    n: usize,
    k: usize,
    h: &[f64],
    bits: u32,
    wo: WeightOnly,
    opts: GptqOptions,
    format: FloatFormat,
) -> Result<QuantizedWeight, String> {
    check(wt, n, k, wo)?;
    let p = prepare(h, k, opts)?;
    let u = p.u;
    let mut st = State::new(wt, n, k, bits, wo, opts, format, p.perm, Some(h));
    let b = block_len(opts.block, st.g);
    let mut err = vec![0f64; b * n];
    let mut b0 = 0;
    while b0 < k {
        let b1 = (b0 + b).min(k);
        for a in b0..b1 {
            let (e, _) = err[(a - b0) * n..].split_at_mut(n);
            st.quantize_column(a, u[a * k + a], e);
            let e = &err[(a - b0) * n..(a - b0 + 1) * n];
            for j in a + 1..b1 {
                let c = u[a * k + j];
                for (w, &x) in st.w[j * n..(j + 1) * n].iter_mut().zip(e) {
                    *w -= c * x;
                }
            }
        }
        for j in b1..k {
            let row = &mut st.w[j * n..(j + 1) * n];
            for a in b0..b1 {
                let c = u[a * k + j];
                let e = &err[(a - b0) * n..(a - b0 + 1) * n];
                for (w, &x) in row.iter_mut().zip(e) {
                    *w -= c * x;
                }
            }
        }
        b0 = b1;
    }
    Ok(st.finish())
}

/// GPTQ one column at a time, every later column updated at once: the
/// slow form [`gptq`] is checked against.
#[allow(clippy::too_many_arguments)]
pub fn gptq_reference(
    wt: &[f32],
    n: usize,
    k: usize,
    h: &[f64],
    bits: u32,
    wo: WeightOnly,
    opts: GptqOptions,
    format: FloatFormat,
) -> Result<QuantizedWeight, String> {
    check(wt, n, k, wo)?;
    let p = prepare(h, k, opts)?;
    let u = p.u;
    let mut st = State::new(wt, n, k, bits, wo, opts, format, p.perm, Some(h));
    let mut err = vec![0f64; n];
    for a in 0..k {
        st.quantize_column(a, u[a * k + a], &mut err);
        for j in a + 1..k {
            let c = u[a * k + j];
            for (w, &x) in st.w[j * n..(j + 1) * n].iter_mut().zip(&err) {
                *w -= c * x;
            }
        }
    }
    Ok(st.finish())
}

#[cfg(test)]
mod tests;
