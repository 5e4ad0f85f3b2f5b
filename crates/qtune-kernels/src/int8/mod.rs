//! Integer kernels for the int8 layers of the quantized-model simulation:
//! Conv (any group count, strides, dilations, pads) and MatMul/Gemm on
//! uint8 or int8 activation codes times int8 weights, with exact int32
//! accumulation and the requantization fused into the output write.
//!
//! # Arithmetic
//!
//! For output channel `c` the kernels compute the exact integer
//!
//! ```text
//! acc = sum_k (x_k - x_zp) * w_ck + bias_c          (i32, wrapping)
//! ```
//!
//! and then finish it as the float path it replaces does (see
//! [`OutputStage`]): `y = f32(acc) * scale_c`, rounded once (IEEE
//! multiply); with a [`QuantTail`], `y` goes through the Relu/Clip bounds,
//! is divided by the QuantizeLinear scale and quantized as ONNX
//! QuantizeLinear does (round half to even, zero point, saturation). That is
//! the operation sequence of qtune's simulation graph (a Conv on
//! integer-valued floats, a `Mul` by the scale, `Relu`/`Clip`,
//! `QuantizeLinear`), so the results are bit-identical to it whenever the
//! float convolution is exact: when every partial sum stays below 2^24 in
//! magnitude. Beyond that the float path rounds partial sums in an order of
//! its own, while these kernels stay exact and round once.
//!
//! Overflow: the int32 sum wraps; it cannot overflow for reduction lengths
//! below 65,793 (`255 * 128 * K < 2^31`), which every real layer is.
//!
//! # Paths
//!
//! * AVX-512 VNNI (`vpdpbusd`, unsigned bytes times signed bytes, four
//!   products summed into each int32 lane), chosen at run time when the CPU
//!   has `avx512vnni` and the environment does not set `QTUNE_INT8_VNNI=0`.
//!   The activation is the unsigned operand: int8 codes are shifted by 128
//!   (`x ^ 0x80`) and the zero point with them, and the zero point enters
//!   once per output channel through the weight sums (`acc = sum x_u w -
//!   zp_u sum w`), so padding is filled with the zero point's code.
//! * The portable path: the same packing and tiling with a plain-Rust
//!   microkernel (compiled per feature level, see `qtune_simd::dispatch`),
//!   for CPUs without VNNI and for testing ([`Int8Path::Portable`]).
//! * Convolutions with strides and dilations 1 (but plain 1x1 ones) run
//!   over the padded grid: the input is padded once per call, which makes
//!   each im2col row one contiguous run, and the columns past each output
//!   row's end (`kw - 1` per row) are computed and dropped
//!   (`pack::PaddedInput`). The others build their im2col rows pixel run by
//!   pixel run.
//! * Depthwise convolutions (one input channel per group) use a direct
//!   kernel on zero-point-centred 16-bit planes on both paths (a reduction
//!   of `kh * kw` values is too short for the packed product).
//! * [`reference`](mod@reference): slow scalar twins for the differential tests.
//!
//! AMX tiles are not used: the CPUs qtune is measured on (AMD EPYC, Zen 4)
//! have no AMX, so such a path could not be tested here.
//!
//! Every output element is computed by integer arithmetic that does not
//! depend on the tiling, so results are identical for any thread count.

mod depthwise;
mod pack;
mod portable;
pub mod reference;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vnni;

use std::sync::OnceLock;

use crate::Parallelism;
pub use crate::quant::QRange;
use crate::util::{SendPtr, for_each_tile, par_for_work};

use pack::PaddedInput;
pub use pack::{MatrixLayout, PackedInt8};

/// Output channels per packed weight block (rows of a microkernel tile).
pub(crate) const MR: usize = 6;
/// Columns (pixels or matrix rows) of one packed activation panel; a
/// multiple of 64, the widest microkernel tile.
pub(crate) const PANEL: usize = 256;
/// Widest microkernel tile, in columns (four 16-lane vectors).
pub(crate) const TILE_COLS: usize = 64;

/// Which integer kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Int8Path {
    /// AVX-512 VNNI when the CPU has it (unless `QTUNE_INT8_VNNI=0`), else
    /// the portable path.
    #[default]
    Auto,
    /// The portable kernels, even on a CPU with VNNI (for tests and A/B
    /// measurements).
    Portable,
}

/// True when [`Int8Path::Auto`] runs the VNNI kernels on this machine.
pub fn vnni_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("QTUNE_INT8_VNNI").is_ok_and(|v| v == "0");
        !off && cpu_has_vnni()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_vnni() -> bool {
    qtune_simd::has_avx512() && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_vnni() -> bool {
    false
}

impl Int8Path {
    fn use_vnni(self) -> bool {
        self == Int8Path::Auto && vnni_available()
    }
}

/// Activation codes.
#[derive(Debug, Clone, Copy)]
pub enum Int8In<'a> {
    U8(&'a [u8]),
    I8(&'a [i8]),
}

impl Int8In<'_> {
    pub fn len(&self) -> usize {
        match self {
            Int8In::U8(v) => v.len(),
            Int8In::I8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The codes as unsigned bytes (int8 shifted by 128) and the zero
    /// point shifted alike.
    fn unsigned(&self, zero_point: i32) -> (&[u8], u8, i32) {
        match *self {
            Int8In::U8(v) => (v, 0, zero_point),
            Int8In::I8(v) => {
                // SAFETY: i8 and u8 have the same size and alignment, and
                // every bit pattern is valid for both.
                let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len()) };
                (bytes, 0x80, zero_point + 128)
            }
        }
    }

    /// Code `i` minus the zero point.
    #[inline(always)]
    fn centred(&self, i: usize, zero_point: i32) -> i32 {
        match self {
            Int8In::U8(v) => i32::from(v[i]) - zero_point,
            Int8In::I8(v) => i32::from(v[i]) - zero_point,
        }
    }
}

/// The output buffer: float (the rescaled accumulator) or quantized codes
/// (with a [`QuantTail`]).
#[derive(Debug)]
pub enum Int8Out<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
    I8(&'a mut [i8]),
}

impl Int8Out<'_> {
    pub fn len(&self) -> usize {
        match self {
            Int8Out::F32(v) => v.len(),
            Int8Out::U8(v) => v.len(),
            Int8Out::I8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ptr(&mut self) -> OutPtr {
        match self {
            Int8Out::F32(v) => OutPtr::F32(SendPtr(v.as_mut_ptr())),
            Int8Out::U8(v) => OutPtr::U8(SendPtr(v.as_mut_ptr())),
            Int8Out::I8(v) => OutPtr::I8(SendPtr(v.as_mut_ptr())),
        }
    }
}

#[derive(Clone, Copy)]
enum OutPtr {
    F32(SendPtr<f32>),
    U8(SendPtr<u8>),
    I8(SendPtr<i8>),
}

/// A quantized output: `Relu`/`Clip` bounds, then ONNX QuantizeLinear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantTail {
    /// Bounds applied to the rescaled value first (`Relu` is `(0, inf)`),
    /// with the select semantics of qtune's Clip kernel.
    pub clamp: Option<(f32, f32)>,
    /// The QuantizeLinear scale (1 when the layer's scale already holds
    /// the combined multiplier).
    pub scale: f32,
    pub zero_point: i32,
    pub range: QRange,
}

/// How the int32 accumulator becomes the output (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct OutputStage<'a> {
    /// int32 bias per output channel.
    pub bias: Option<&'a [i32]>,
    /// Float scale: one, or one per output channel.
    pub scale: &'a [f32],
    /// Quantize the output (the output buffer is then U8 or I8).
    pub tail: Option<QuantTail>,
}

impl OutputStage<'_> {
    #[inline(always)]
    fn scale_of(&self, c: usize) -> f32 {
        if self.scale.len() == 1 {
            self.scale[0]
        } else {
            self.scale[c]
        }
    }

    fn check(&self, channels: usize, out: &Int8Out) {
        assert!(
            self.scale.len() == 1 || self.scale.len() == channels,
            "int8: {} scales for {channels} output channels",
            self.scale.len()
        );
        if let Some(b) = self.bias {
            assert_eq!(b.len(), channels, "int8: bias length");
        }
        match (self.tail, out) {
            (None, Int8Out::F32(_)) => {}
            (Some(t), Int8Out::U8(_)) => {
                assert!(t.range.min >= 0 && t.range.max <= 255, "int8: u8 range");
            }
            (Some(t), Int8Out::I8(_)) => {
                assert!(t.range.min >= -128 && t.range.max <= 127, "int8: i8 range");
            }
            _ => panic!("int8: the output type does not match the output stage"),
        }
    }
}

/// The rescaled float value of a finished accumulator.
#[inline(always)]
pub(crate) fn rescale(acc: i32, scale: f32) -> f32 {
    // Round to nearest even: exact below 2^24, where the float path is exact too.
    #[allow(clippy::cast_precision_loss)]
    let a = acc as f32;
    a * scale
}

/// Quantizes a rescaled value as the Relu/Clip kernel followed by ONNX
/// QuantizeLinear does (qtune's `quantize_linear`): the code, an integer
/// within `t.range`, as f32.
#[inline(always)]
pub(crate) fn quantize(y: f32, t: &QuantTail) -> f32 {
    let y = match t.clamp {
        Some((lo, hi)) => {
            let y = if y < lo { lo } else { y };
            if y > hi { hi } else { y }
        }
        None => y,
    };
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi, zp) = (
        (t.range.min - t.zero_point) as f32,
        (t.range.max - t.zero_point) as f32,
        t.zero_point as f32,
    );
    let q = (y / t.scale).clamp(lo, hi).round_ties_even();
    let q = if q.is_nan() { lo } else { q };
    q + zp
}

// Stores of a code (an integer within the output type, |v| < 2^22): `v +
// 1.5 * 2^23` holds `v` in its low mantissa bits, so its low byte is `v`'s
// two's-complement byte. Integer lanes vectorize where a saturating float
// -> int cast stays scalar.
const MAGIC: f32 = 12_582_912.0;

#[allow(clippy::cast_possible_truncation)]
#[inline(always)]
pub(crate) fn u8_code(v: f32) -> u8 {
    (v + MAGIC).to_bits() as u8
}

#[allow(clippy::cast_possible_truncation)]
#[inline(always)]
pub(crate) fn i8_code(v: f32) -> i8 {
    ((v + MAGIC).to_bits() as u8).cast_signed()
}

/// Writes finished values of output channel `c`: `acc[j] + corr` goes to
/// element `base + j * step`.
///
/// # Safety
/// Every written index is within the output buffer and written by no other
/// tile.
#[inline]
unsafe fn write_row(
    out: OutPtr,
    stage: &OutputStage,
    c: usize,
    corr: i32,
    acc: &[i32],
    base: usize,
    step: usize,
) {
    // SAFETY: forwarded.
    unsafe { write_row_by::<true>(out, stage, c, corr, acc, base, step) }
}

/// [`write_row`]; `DISPATCH = false` for callers that are themselves
/// compiled per feature level (inside a `dispatch!` function), where the
/// finishing loops inline into the caller instead of a dispatched call per
/// row.
///
/// # Safety
/// As [`write_row`].
#[inline(always)]
unsafe fn write_row_by<const DISPATCH: bool>(
    out: OutPtr,
    stage: &OutputStage,
    c: usize,
    corr: i32,
    acc: &[i32],
    base: usize,
    step: usize,
) {
    let scale = stage.scale_of(c);
    match (out, stage.tail) {
        (OutPtr::F32(p), _) => {
            if step == 1 {
                // SAFETY: the caller's contract covers `base..base + len`.
                let o = unsafe { std::slice::from_raw_parts_mut(p.get().add(base), acc.len()) };
                if DISPATCH {
                    finish_f32(acc, corr, scale, o);
                } else {
                    finish_f32_body(acc, corr, scale, o);
                }
            } else {
                for (j, &a) in acc.iter().enumerate() {
                    // SAFETY: as above, element by element.
                    unsafe { *p.get().add(base + j * step) = rescale(a.wrapping_add(corr), scale) };
                }
            }
        }
        (OutPtr::U8(p), Some(t)) => {
            if step == 1 {
                // SAFETY: as above.
                let o = unsafe { std::slice::from_raw_parts_mut(p.get().add(base), acc.len()) };
                if DISPATCH {
                    finish_u8(acc, corr, scale, t, o);
                } else {
                    finish_u8_body(acc, corr, scale, t, o);
                }
            } else {
                for (j, &a) in acc.iter().enumerate() {
                    let q = quantize(rescale(a.wrapping_add(corr), scale), &t);
                    // SAFETY: as above.
                    unsafe { *p.get().add(base + j * step) = u8_code(q) };
                }
            }
        }
        (OutPtr::I8(p), Some(t)) => {
            if step == 1 {
                // SAFETY: as above.
                let o = unsafe { std::slice::from_raw_parts_mut(p.get().add(base), acc.len()) };
                if DISPATCH {
                    finish_i8(acc, corr, scale, t, o);
                } else {
                    finish_i8_body(acc, corr, scale, t, o);
                }
            } else {
                for (j, &a) in acc.iter().enumerate() {
                    let q = quantize(rescale(a.wrapping_add(corr), scale), &t);
                    // SAFETY: as above.
                    unsafe { *p.get().add(base + j * step) = i8_code(q) };
                }
            }
        }
        _ => unreachable!("OutputStage::check pairs the output type with the tail"),
    }
}

#[inline(always)]
fn finish_f32_body(acc: &[i32], corr: i32, scale: f32, out: &mut [f32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = rescale(a.wrapping_add(corr), scale);
    }
}

#[inline(always)]
fn finish_u8_body(acc: &[i32], corr: i32, scale: f32, t: QuantTail, out: &mut [u8]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = u8_code(quantize(rescale(a.wrapping_add(corr), scale), &t));
    }
}

#[inline(always)]
fn finish_i8_body(acc: &[i32], corr: i32, scale: f32, t: QuantTail, out: &mut [i8]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = i8_code(quantize(rescale(a.wrapping_add(corr), scale), &t));
    }
}

qtune_simd::dispatch! {
    fn finish_f32(acc: &[i32], corr: i32, scale: f32, out: &mut [f32]) {
        finish_f32_body(acc, corr, scale, out);
    }
}

qtune_simd::dispatch! {
    fn finish_u8(acc: &[i32], corr: i32, scale: f32, t: QuantTail, out: &mut [u8]) {
        finish_u8_body(acc, corr, scale, t, out);
    }
}

qtune_simd::dispatch! {
    fn finish_i8(acc: &[i32], corr: i32, scale: f32, t: QuantTail, out: &mut [i8]) {
        finish_i8_body(acc, corr, scale, t, out);
    }
}

/// Geometry of an int8 convolution (NCHW input, OIHW weight; a 1-D
/// convolution is a 2-D one of height 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// `[n, c, h, w]`.
    pub input: [usize; 4],
    /// `[m, c / group, kh, kw]`.
    pub weight: [usize; 4],
    /// `[stride_h, stride_w]`, each >= 1.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `[dilation_h, dilation_w]`, each >= 1.
    pub dilations: [usize; 2],
    pub group: usize,
}

impl ConvGeometry {
    /// `[n, m, oh, ow]`.
    pub fn output(&self) -> [usize; 4] {
        let len = |i: usize, pb: usize, pe: usize, k: usize, s: usize, d: usize| {
            let span = d * (k - 1) + 1;
            (i + pb + pe).saturating_sub(span) / s + 1
        };
        [
            self.input[0],
            self.weight[0],
            len(
                self.input[2],
                self.pads[0],
                self.pads[2],
                self.weight[2],
                self.strides[0],
                self.dilations[0],
            ),
            len(
                self.input[3],
                self.pads[1],
                self.pads[3],
                self.weight[3],
                self.strides[1],
                self.dilations[1],
            ),
        ]
    }

    fn check(&self) {
        let [_, c, h, w] = self.input;
        let [m, cg, kh, kw] = self.weight;
        assert!(self.group >= 1, "int8 conv: group 0");
        assert!(
            c == cg * self.group && m.is_multiple_of(self.group),
            "int8 conv: {c} input and {m} output channels in {} groups of {cg}",
            self.group
        );
        assert!(kh >= 1 && kw >= 1, "int8 conv: empty kernel");
        assert!(
            self.strides.iter().chain(&self.dilations).all(|&v| v >= 1),
            "int8 conv: strides and dilations must be >= 1"
        );
        assert!(
            h + self.pads[0] + self.pads[2] > self.dilations[0] * (kh - 1)
                && w + self.pads[1] + self.pads[3] > self.dilations[1] * (kw - 1),
            "int8 conv: kernel larger than the padded input"
        );
    }

    fn is_depthwise(&self) -> bool {
        self.weight[1] == 1 && self.group > 1
    }
}

/// `corr[c] = bias[c] - zp_u * wsum[c]` (wrapping).
fn corrections(w: &PackedInt8, stage: &OutputStage, zp_u: i32) -> Vec<i32> {
    (0..w.m)
        .map(|c| {
            let b = stage.bias.map_or(0, |b| b[c]);
            b.wrapping_sub(zp_u.wrapping_mul(w.wsum[c]))
        })
        .collect()
}

/// Runs the microkernel over one packed panel of `cols` columns for the
/// weight blocks `blocks` of group `g`; `emit(c, col, acc)` receives each
/// row of finished tiles.
fn panel_product(
    w: &PackedInt8,
    g: usize,
    blocks: std::ops::Range<usize>,
    panel: &[u8],
    cols: usize,
    vnni: bool,
    mut emit: impl FnMut(usize, usize, &[i32]),
) {
    let mut tile = [[0i32; PANEL]; MR];
    for mb in blocks {
        let a = w.block(g, mb);
        let rows = MR.min(w.m_g - mb * MR);
        let mut j = 0;
        while j < cols {
            let nv = (cols - j).div_ceil(16).min(TILE_COLS / 16);
            let x = &panel[j * 4..];
            #[cfg(target_arch = "x86_64")]
            if vnni {
                // SAFETY: `vnni` is set only when the CPU has AVX-512 VNNI;
                // the packing guarantees `a` holds `k4` blocks of MR x 4
                // bytes and `x` (a PANEL-wide panel, j + 16 nv <= PANEL) `k4`
                // rows of PANEL x 4 bytes.
                unsafe { vnni::tile(nv, w.k4, a, x, PANEL * 4, &mut tile, j) };
            } else {
                portable::tile(nv, w.k4, a, x, PANEL * 4, &mut tile, j);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = vnni;
                portable::tile(nv, w.k4, a, x, PANEL * 4, &mut tile, j);
            }
            j += nv * 16;
        }
        // Finished a whole panel row at a time: fewer, longer output runs.
        for (r, row) in tile.iter().enumerate().take(rows) {
            emit(g * w.m_g + mb * MR + r, 0, &row[..cols]);
        }
    }
}

/// Tiles of at least this many are made by splitting the weight blocks
/// when the panels alone are fewer (small feature maps), so that both
/// threads have work; a split repacks the panel, so it keeps at least
/// `MIN_SPLIT_BLOCKS` blocks per tile. Integer results do not depend on it.
const MIN_TILES: usize = 8;
const MIN_SPLIT_BLOCKS: usize = 4;

/// Ranges of weight blocks, one per tile, for `units` panels.
fn block_chunks(m_blocks: usize, units: usize) -> Vec<std::ops::Range<usize>> {
    let split = if units >= MIN_TILES {
        1
    } else {
        MIN_TILES
            .div_ceil(units)
            .min((m_blocks / MIN_SPLIT_BLOCKS).max(1))
    };
    let chunk = m_blocks.div_ceil(split).max(1);
    (0..m_blocks)
        .step_by(chunk)
        .map(|s| s..(s + chunk).min(m_blocks))
        .collect()
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a zeroed-or-reused scratch buffer of `len` bytes (its
/// content is fully overwritten by the packing before use).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0);
        }
        f(&mut s[..len])
    })
}

/// int8 convolution: `x` is `[n, c, h, w]` codes with zero point `x_zp`,
/// `w` the packed `[m, c / group, kh, kw]` weight ([`PackedInt8::conv`]),
/// `out` `[n, m, oh, ow]`.
pub fn conv2d_int8(
    x: Int8In,
    x_zp: i32,
    geom: &ConvGeometry,
    w: &PackedInt8,
    stage: &OutputStage,
    mut out: Int8Out,
    par: Parallelism,
    path: Int8Path,
) {
    geom.check();
    let [n, c, h, wd] = geom.input;
    let [_, m, oh, ow] = geom.output();
    assert_eq!(x.len(), n * c * h * wd, "int8 conv: input length");
    assert_eq!(out.len(), n * m * oh * ow, "int8 conv: output length");
    assert!(
        w.matches_conv(geom),
        "int8 conv: the packed weight is not this layer's"
    );
    stage.check(m, &out);
    let optr = out.ptr();
    let pixels = oh * ow;
    if pixels == 0 || n == 0 || m == 0 {
        return;
    }
    let macs = n * m * pixels * geom.weight[1] * geom.weight[2] * geom.weight[3];
    let par = par_for_work(par, 2 * macs);
    if geom.is_depthwise() {
        depthwise::conv(x, x_zp, geom, w, stage, optr, par);
        return;
    }
    let (bytes, flip, zp_u) = x.unsigned(x_zp);
    assert!(
        (0..=255).contains(&zp_u),
        "int8 conv: zero point {x_zp} outside the input type"
    );
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let pad = zp_u as u8;
    let corr = corrections(w, stage, zp_u);
    let vnni = path.use_vnni();
    // Stride-1 layers run over the padded grid (`PaddedInput`): columns
    // are padded-grid positions, of which those past an output row's end
    // are dropped; the others' columns are the output pixels.
    let padded = PaddedInput::applies(geom).then(|| PaddedInput::new(bytes, flip, pad, geom));
    let columns = padded.as_ref().map_or(pixels, |p| p.columns(geom));
    let panels = columns.div_ceil(PANEL);
    let units = n * geom.group * panels;
    let chunks = block_chunks(w.m_blocks, units);
    for_each_tile(units * chunks.len(), par, |t| {
        let (u, ch) = (t / chunks.len(), t % chunks.len());
        let (b, rest) = (u / (geom.group * panels), u % (geom.group * panels));
        let (g, p) = (rest / panels, rest % panels);
        let p0 = p * PANEL;
        let cols = PANEL.min(columns - p0);
        with_scratch(w.k4 * PANEL * 4, |panel| {
            match &padded {
                Some(pi) => pack::padded_panel(pi, geom, b, g, p0, cols, w.k4, panel),
                None => pack::im2col_panel(bytes, flip, pad, geom, b, g, p0, cols, w.k4, panel),
            }
            panel_product(w, g, chunks[ch].clone(), panel, cols, vnni, |c, j, acc| {
                let plane = (b * m + c) * pixels;
                let Some(pi) = &padded else {
                    // SAFETY: tile (b, g, p, chunk) alone writes the rows of
                    // its weight blocks in group g, columns p0..p0 + cols of
                    // sample b.
                    unsafe { write_row(optr, stage, c, corr[c], acc, plane + p0 + j, 1) };
                    return;
                };
                // One run per output row: the columns before its end.
                let (first, end) = (p0 + j, p0 + j + acc.len());
                let mut q = first;
                while q < end {
                    let (oy, ox) = (q / pi.wp, q % pi.wp);
                    if ox >= ow {
                        q += pi.wp - ox;
                        continue;
                    }
                    let run = (ow - ox).min(end - q);
                    let a = &acc[q - first..q - first + run];
                    // SAFETY: as above; padded-grid column q = oy wp + ox,
                    // ox < ow, is output pixel oy ow + ox, written by this
                    // tile alone.
                    unsafe { write_row(optr, stage, c, corr[c], a, plane + oy * ow + ox, 1) };
                    q += run;
                }
            });
        });
    });
}

/// int8 matrix product `out[r][c] = sum_k x[r][k] w[c][k]`: `x` is
/// `[rows, k]` codes with zero point `x_zp`, `w` the packed weight
/// ([`PackedInt8::matrix`]), `out` `[rows, m]`.
pub fn matmul_int8(
    x: Int8In,
    x_zp: i32,
    rows: usize,
    w: &PackedInt8,
    stage: &OutputStage,
    mut out: Int8Out,
    par: Parallelism,
    path: Int8Path,
) {
    let (m, k) = (w.m, w.k);
    assert!(
        w.groups == 1 && w.depthwise.is_none(),
        "int8 matmul: not a matrix weight"
    );
    assert_eq!(x.len(), rows * k, "int8 matmul: input length");
    assert_eq!(out.len(), rows * m, "int8 matmul: output length");
    stage.check(m, &out);
    if rows == 0 || m == 0 {
        return;
    }
    let optr = out.ptr();
    let (bytes, flip, zp_u) = x.unsigned(x_zp);
    assert!(
        (0..=255).contains(&zp_u),
        "int8 matmul: zero point {x_zp} outside the input type"
    );
    let corr = corrections(w, stage, zp_u);
    let vnni = path.use_vnni();
    let par = par_for_work(par, 2 * rows * m * k);
    let panels = rows.div_ceil(PANEL);
    let chunks = block_chunks(w.m_blocks, panels);
    for_each_tile(panels * chunks.len(), par, |t| {
        let (p, ch) = (t / chunks.len(), t % chunks.len());
        let r0 = p * PANEL;
        let cols = PANEL.min(rows - r0);
        with_scratch(w.k4 * PANEL * 4, |panel| {
            pack::rows_panel(bytes, flip, k, r0, cols, w.k4, panel);
            panel_product(w, 0, chunks[ch].clone(), panel, cols, vnni, |c, j, acc| {
                // SAFETY: tile (p, chunk) alone writes rows r0..r0 + cols,
                // columns of its weight blocks.
                unsafe { write_row(optr, stage, c, corr[c], acc, (r0 + j) * m + c, m) };
            });
        });
    });
}
