//! Bilinear resize of 8-bit images, bit-exact with OpenCV's
//! `cv2.resize(..., interpolation=INTER_LINEAR)` for `CV_8U` data, as
//! re-implemented by `shared/workloads/tools/preprocess.py`.
//!
//! For each axis and destination index `d` (OpenCV `resizeGeneric_` set-up):
//!
//! ```text
//! scale = 1 / (dst / src)                      (f64)
//! f     = f32((d + 0.5) * scale - 0.5)         (half-pixel centres)
//! s     = floor(f);  f -= s                    (f32)
//! w0    = rint((1 - f) * 2048),  w1 = rint(f * 2048)   (INTER_RESIZE_COEF_BITS = 11, ties to even)
//! ```
//!
//! Horizontally, taps left of the first or right of the last column are
//! clamped with `f = 0`; vertically `f` is kept and only the row index is
//! clamped. The horizontal pass keeps `src * w` sums (scaled by 2048, i32);
//! the vertical pass is OpenCV's `VResizeLinear` with `FixedPtCast<.., 22>`:
//!
//! ```text
//! out = (((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2
//! ```
//!
//! An exact 2x downscale in both directions is a 2x2 box average
//! `(a + b + c + d + 2) >> 2` (OpenCV switches to `INTER_AREA` there), and an
//! unchanged size is a copy. No antialiasing: this is not what
//! `fast_image_resize` or PIL compute.
//!
//! [`resize_bilinear`] is the fast kernel; [`resize_bilinear_reference`] is
//! the same arithmetic written per output sample, for differential tests.

use crate::decode::Image;
use crate::error::DataError;

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1u32 << COEF_BITS) as f32;

/// One destination index's source taps and fixed-point weights on one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tap {
    s0: usize,
    s1: usize,
    w0: i32,
    w1: i32,
}

/// OpenCV's `saturate_cast<short>(float)`: round half to even, saturate.
fn to_i16_weight(x: f32) -> i32 {
    let r = x
        .round_ties_even()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX));
    // In range by the clamp; the value is integral.
    #[allow(clippy::cast_possible_truncation)]
    let w = r as i32;
    w
}

#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn tap(d: usize, src: usize, dst: usize, clamp_to_edge: bool) -> Tap {
    // Sizes are image dimensions (< 2^24), exact in f64 and f32.
    let scale = 1.0 / (dst as f64 / src as f64);
    let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let mut s = f.floor() as i64;
    f -= s as f32;
    let last = src as i64 - 1;
    if clamp_to_edge {
        if s < 0 {
            f = 0.0;
            s = 0;
        }
        if s >= last {
            f = 0.0;
            s = last;
        }
    }
    let clamp = |i: i64| usize::try_from(i.clamp(0, last)).unwrap_or(0);
    Tap {
        s0: clamp(s),
        s1: clamp(s + 1),
        w0: to_i16_weight((1.0 - f) * COEF_SCALE),
        w1: to_i16_weight(f * COEF_SCALE),
    }
}

fn taps(src: usize, dst: usize, clamp_to_edge: bool) -> Vec<Tap> {
    (0..dst).map(|d| tap(d, src, dst, clamp_to_edge)).collect()
}

/// The vertical-pass combination of two horizontally filtered samples.
#[inline(always)]
fn vertical(b0: i32, b1: i32, h0: i32, h1: i32) -> u8 {
    let v = (((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2;
    // Clamped to 0..=255, so the narrowing is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let b = v.clamp(0, 255) as u8;
    b
}

fn check_sizes(img: &Image, out_w: usize, out_h: usize) -> Result<(), DataError> {
    if img.width() == 0 || img.height() == 0 || out_w == 0 || out_h == 0 {
        return Err(DataError::Geometry {
            width: img.width(),
            height: img.height(),
            message: format!("cannot resize to {out_w}x{out_h} (sizes must be non-zero)"),
        });
    }
    Ok(())
}

fn box2x2(img: &Image, out_w: usize, out_h: usize) -> Result<Image, DataError> {
    let c = img.channels();
    let mut out = Vec::with_capacity(out_w * out_h * c);
    for y in 0..out_h {
        let (r0, r1) = (img.row(2 * y), img.row(2 * y + 1));
        for (p0, p1) in r0.chunks_exact(2 * c).zip(r1.chunks_exact(2 * c)) {
            for k in 0..c {
                let s = u16::from(p0[k])
                    + u16::from(p0[c + k])
                    + u16::from(p1[k])
                    + u16::from(p1[c + k]);
                out.push(((s + 2) >> 2).to_le_bytes()[0]);
            }
        }
    }
    Image::new(out_w, out_h, img.layout(), out)
}

/// Special cases shared by both implementations: same size and exact 2x.
fn special_case(img: &Image, out_w: usize, out_h: usize) -> Option<Result<Image, DataError>> {
    if (img.width(), img.height()) == (out_w, out_h) {
        return Some(Ok(img.clone()));
    }
    if img.width() == 2 * out_w && img.height() == 2 * out_h {
        return Some(box2x2(img, out_w, out_h));
    }
    None
}

/// Resizes to `out_w` x `out_h` with OpenCV INTER_LINEAR arithmetic (module
/// docs). Horizontal pass per needed source row (each computed once, two
/// rows cached), then a vertical pass over whole rows.
pub fn resize_bilinear(img: &Image, out_w: usize, out_h: usize) -> Result<Image, DataError> {
    check_sizes(img, out_w, out_h)?;
    if let Some(r) = special_case(img, out_w, out_h) {
        return r;
    }
    match img.channels() {
        1 => Ok(resize_fast::<1>(img, out_w, out_h)),
        3 => Ok(resize_fast::<3>(img, out_w, out_h)),
        _ => Ok(resize_fast::<4>(img, out_w, out_h)),
    }
}

/// Horizontal tap with byte offsets already multiplied by the channel count.
#[derive(Clone, Copy)]
struct ColumnTap {
    x0: usize,
    x1: usize,
    w0: i32,
    w1: i32,
}

fn horizontal<const C: usize>(src: &[u8], columns: &[ColumnTap], out: &mut [i32]) {
    for (o, t) in out.chunks_exact_mut(C).zip(columns) {
        let a = &src[t.x0..t.x0 + C];
        let b = &src[t.x1..t.x1 + C];
        for k in 0..C {
            o[k] = i32::from(a[k]) * t.w0 + i32::from(b[k]) * t.w1;
        }
    }
}

/// Two horizontally filtered rows, tagged with their source row index.
struct RowCache {
    index: [Option<usize>; 2],
    rows: [Vec<i32>; 2],
}

impl RowCache {
    /// Makes rows `y0` and `y1` present and returns which slots hold them.
    fn ensure(
        &mut self,
        y0: usize,
        y1: usize,
        mut fill: impl FnMut(usize, &mut [i32]),
    ) -> (usize, usize) {
        let mut slot_of = |y: usize, keep: Option<usize>, cache: &mut Self| -> usize {
            if let Some(s) = cache.index.iter().position(|&i| i == Some(y)) {
                return s;
            }
            // Evict the slot not holding the row we must keep.
            let s = match keep {
                Some(k) if cache.index[0] == Some(k) => 1,
                _ => 0,
            };
            fill(y, &mut cache.rows[s]);
            cache.index[s] = Some(y);
            s
        };
        let s0 = slot_of(y0, Some(y1), self);
        let s1 = slot_of(y1, Some(y0), self);
        (s0, s1)
    }
}

fn resize_fast<const C: usize>(img: &Image, out_w: usize, out_h: usize) -> Image {
    let columns: Vec<ColumnTap> = taps(img.width(), out_w, true)
        .into_iter()
        .map(|t| ColumnTap {
            x0: t.s0 * C,
            x1: t.s1 * C,
            w0: t.w0,
            w1: t.w1,
        })
        .collect();
    let rows = taps(img.height(), out_h, false);
    let row_len = out_w * C;
    let mut cache = RowCache {
        index: [None, None],
        rows: [vec![0; row_len], vec![0; row_len]],
    };
    let mut out = Image::filled(out_w, out_h, img.layout(), 0);
    for (dst_row, t) in out.data_mut().chunks_exact_mut(row_len).zip(&rows) {
        let (s0, s1) = cache.ensure(t.s0, t.s1, |y, buf| {
            horizontal::<C>(img.row(y), &columns, buf)
        });
        let (h0, h1) = (&cache.rows[s0], &cache.rows[s1]);
        let (b0, b1) = (t.w0, t.w1);
        for ((o, &a), &b) in dst_row.iter_mut().zip(h0.iter()).zip(h1.iter()) {
            *o = vertical(b0, b1, a, b);
        }
    }
    out
}

/// The slow, obviously-correct version of [`resize_bilinear`]: every output
/// sample computes its own taps. For differential tests only.
pub fn resize_bilinear_reference(
    img: &Image,
    out_w: usize,
    out_h: usize,
) -> Result<Image, DataError> {
    check_sizes(img, out_w, out_h)?;
    if let Some(r) = special_case(img, out_w, out_h) {
        return r;
    }
    let c = img.channels();
    let at = |x: usize, y: usize, k: usize| i32::from(img.data()[(y * img.width() + x) * c + k]);
    let mut out = Vec::with_capacity(out_w * out_h * c);
    for dy in 0..out_h {
        let ty = tap(dy, img.height(), out_h, false);
        for dx in 0..out_w {
            let tx = tap(dx, img.width(), out_w, true);
            for k in 0..c {
                let h0 = at(tx.s0, ty.s0, k) * tx.w0 + at(tx.s1, ty.s0, k) * tx.w1;
                let h1 = at(tx.s0, ty.s1, k) * tx.w0 + at(tx.s1, ty.s1, k) * tx.w1;
                out.push(vertical(ty.w0, ty.w1, h0, h1));
            }
        }
    }
    Image::new(out_w, out_h, img.layout(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ColorLayout;

    /// A deterministic pseudo-random image (64-bit LCG), no extra dependency.
    fn noise(width: usize, height: usize, layout: ColorLayout, seed: u64) -> Image {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data = (0..width * height * layout.channels())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56).to_le_bytes()[0]
            })
            .collect();
        Image::new(width, height, layout, data).unwrap()
    }

    #[test]
    fn fast_matches_reference() {
        struct Case {
            src: (usize, usize),
            dst: (usize, usize),
            layout: ColorLayout,
        }
        let mut cases = Vec::new();
        for (src, dst) in [
            ((640, 480), (224, 224)),
            ((500, 500), (224, 224)),
            ((640, 427), (416, 277)),
            ((97, 61), (320, 203)),
            ((640, 640), (320, 320)),
            ((33, 17), (640, 640)),
            ((1, 1), (5, 3)),
            ((7, 1), (3, 9)),
            ((3, 5), (1, 1)),
            ((640, 480), (640, 480)),
            ((10, 10), (20, 5)),
            ((11, 13), (13, 11)),
        ] {
            for layout in [ColorLayout::Gray, ColorLayout::Rgb, ColorLayout::Rgba] {
                cases.push(Case { src, dst, layout });
            }
        }
        let mut failures = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let img = noise(case.src.0, case.src.1, case.layout, i as u64);
            let fast = resize_bilinear(&img, case.dst.0, case.dst.1).unwrap();
            let slow = resize_bilinear_reference(&img, case.dst.0, case.dst.1).unwrap();
            assert_eq!((fast.width(), fast.height()), case.dst);
            if fast != slow {
                failures.push(format!(
                    "{:?} -> {:?} {:?}",
                    case.src, case.dst, case.layout
                ));
            }
        }
        assert!(failures.is_empty(), "fast != reference for: {failures:#?}");
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Image::filled(37, 23, ColorLayout::Rgb, 201);
        for (w, h) in [(224, 224), (5, 4), (100, 7)] {
            let out = resize_bilinear(&img, w, h).unwrap();
            assert!(out.data().iter().all(|&v| v == 201), "{w}x{h}");
        }
    }

    #[test]
    fn exact_halving_is_a_rounded_box_average() {
        let img = Image::new(2, 2, ColorLayout::Gray, vec![0, 1, 1, 0]).unwrap();
        // (0 + 1 + 1 + 0 + 2) >> 2 = 1
        assert_eq!(resize_bilinear(&img, 1, 1).unwrap().data(), &[1]);
    }

    #[test]
    fn taps_match_opencv_setup() {
        // 4 -> 8 upscale: f = (d + 0.5) * 0.5 - 0.5 = -0.25, 0.25, 0.75, ...
        let t = taps(4, 8, true);
        assert_eq!(
            t[0],
            Tap {
                s0: 0,
                s1: 1,
                w0: 2048,
                w1: 0
            }
        );
        assert_eq!(
            t[1],
            Tap {
                s0: 0,
                s1: 1,
                w0: 1536,
                w1: 512
            }
        );
        assert_eq!(
            t[7],
            Tap {
                s0: 3,
                s1: 3,
                w0: 2048,
                w1: 0
            }
        );
        let v = taps(4, 8, false);
        assert_eq!(
            v[0],
            Tap {
                s0: 0,
                s1: 0,
                w0: 512,
                w1: 1536
            }
        );
        assert_eq!(
            v[7],
            Tap {
                s0: 3,
                s1: 3,
                w0: 1536,
                w1: 512
            }
        );
    }

    #[test]
    fn zero_sizes_are_errors() {
        let img = Image::filled(4, 4, ColorLayout::Rgb, 0);
        assert!(resize_bilinear(&img, 0, 4).is_err());
        assert!(resize_bilinear_reference(&img, 4, 0).is_err());
    }
}
