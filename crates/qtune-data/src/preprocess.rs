//! Image to network input, following TPU-MLIR's `preprocess.run` (and
//! `shared/workloads/tools/preprocess.py`, which it must match).

use qtune_tensor::Tensor;

use crate::config::{ChannelFormat, KeepRatioMode, PadType, PixelFormat, PreprocessConfig};
use crate::decode::{ColorLayout, Image};
use crate::error::DataError;
use crate::resize::resize_bilinear;

/// The image layout a pixel format needs from the reader.
pub fn layout_for(format: PixelFormat) -> ColorLayout {
    match format {
        PixelFormat::Gray => ColorLayout::Gray,
        PixelFormat::Rgb | PixelFormat::Bgr => ColorLayout::Rgb,
        PixelFormat::Rgba => ColorLayout::Rgba,
    }
}

/// Preprocesses one decoded image into a float32 tensor of batch 1:
/// `[1, C, H, W]` (nchw) or `[1, H, W, C]` (nhwc), H, W the network size.
///
/// Steps (TPU-MLIR `preprocess.run`, `ImageResizeTool`):
/// 1. Convert the image to the layout the pixel format needs ([`layout_for`]).
/// 2. Resize to `resize_dims = [h, w]` with OpenCV INTER_LINEAR arithmetic:
///    * stretch (`keep_aspect_ratio = false`);
///    * letterbox: `s = min(w / iw, h / ih)`, resize to
///      `(trunc(iw s), trunc(ih s))`, paste on a `pad_value` canvas at the
///      top-left (`normal`) or at `((w - rw) / 2, (h - rh) / 2)` (`center`);
///    * short-side scale: `s = max(w / iw, h / ih)`, resize to
///      `trunc(iw s)` (or `w` if `iw s < w`) by `trunc(ih s)` (or `h`), then
///      crop `[(rh - h) / 2.., (rw - w) / 2..]`.
/// 3. Centre-crop to the network's H, W if `resize_dims` is larger:
///    `start = dim / 2 - crop / 2`.
/// 4. Reorder channels (`bgr` reverses R, G, B), then `(x - mean[c]) * scale[c]`
///    in float32 (two roundings, no fused multiply-add), with `c` the output
///    channel.
pub fn preprocess(img: &Image, cfg: &PreprocessConfig) -> Result<Tensor, DataError> {
    cfg.validate()?;
    let data = preprocess_into_vec(img, cfg)?;
    let [nh, nw] = cfg.net_dims();
    let c = cfg.pixel_format.channels();
    let shape = match cfg.channel_format {
        ChannelFormat::Nchw => vec![1, c, nh, nw],
        ChannelFormat::Nhwc => vec![1, nh, nw, c],
    };
    Ok(Tensor::from_f32(shape, data)?)
}

/// Preprocesses up to `batch` images into one tensor of the configured input
/// shape. As in TPU-MLIR's calibration, a short group is padded by repeating
/// its last image (so one image fills the whole batch).
pub fn preprocess_batch(images: &[Image], cfg: &PreprocessConfig) -> Result<Tensor, DataError> {
    cfg.validate()?;
    let n = cfg.batch();
    if images.is_empty() || images.len() > n {
        return Err(DataError::Config(format!(
            "a batch of {n} needs 1 to {n} images, got {}",
            images.len()
        )));
    }
    let mut data = Vec::new();
    let mut last = Vec::new();
    for img in images {
        last = preprocess_into_vec(img, cfg)?;
        data.extend_from_slice(&last);
    }
    for _ in images.len()..n {
        data.extend_from_slice(&last);
    }
    Ok(Tensor::from_f32(cfg.input_shape.to_vec(), data)?)
}

/// Truncating `f64 -> usize` for a non-negative finite size, as Python's `int()`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn trunc_size(x: f64) -> usize {
    x as usize
}

#[allow(clippy::cast_precision_loss)]
fn as_f64(x: usize) -> f64 {
    x as f64
}

/// Where the source image lands on the network input: the size it is
/// resized to, and the network-input pixel its top-left corner goes to.
///
/// A network-input point `(x, y)` (continuous pixel coordinates, as a
/// detector's boxes are) comes from the source point
/// `((x - left) * width / resized_width, (y - top) * height / resized_height)`,
/// since the bilinear resize maps pixel edges to pixel edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub resized_width: usize,
    pub resized_height: usize,
    /// Positive inside a letterbox pad; negative when the resized image is
    /// cropped (short-side scale, or `resize_dims` larger than the network).
    pub left: isize,
    pub top: isize,
}

/// The [`Placement`] of a `width` x `height` image under `cfg` (see
/// [`preprocess`] for the steps). Errors as [`preprocess`] does on an empty
/// image or a letterbox that would scale it to nothing.
pub fn placement(
    cfg: &PreprocessConfig,
    width: usize,
    height: usize,
) -> Result<Placement, DataError> {
    let on_canvas = canvas_placement(cfg, width, height)?;
    let [rh, rw] = cfg.effective_resize_dims();
    let [nh, nw] = cfg.net_dims();
    // validate() guarantees resize_dims >= net dims.
    let (crop_top, crop_left) = (rh / 2 - nh / 2, rw / 2 - nw / 2);
    Ok(Placement {
        left: on_canvas.left - signed(crop_left),
        top: on_canvas.top - signed(crop_top),
        ..on_canvas
    })
}

/// Sizes and offsets are bounded by allocated buffers, so they fit `isize`.
fn signed(x: usize) -> isize {
    isize::try_from(x).unwrap_or(isize::MAX)
}

/// Where the resized image lands on the `resize_dims` canvas, before the
/// centre crop to the network size.
fn canvas_placement(
    cfg: &PreprocessConfig,
    width: usize,
    height: usize,
) -> Result<Placement, DataError> {
    let geometry = |message: String| DataError::Geometry {
        width,
        height,
        message,
    };
    let [h, w] = cfg.effective_resize_dims();
    let (iw, ih) = (as_f64(width), as_f64(height));
    if width == 0 || height == 0 {
        return Err(geometry("the image is empty".into()));
    }
    let at = |resized_width, resized_height, left, top| Placement {
        resized_width,
        resized_height,
        left,
        top,
    };
    if !cfg.keep_aspect_ratio {
        return Ok(at(w, h, 0, 0));
    }
    match cfg.keep_ratio_mode {
        KeepRatioMode::Letterbox => {
            let s = (as_f64(w) / iw).min(as_f64(h) / ih);
            let (rw, rh) = (trunc_size(iw * s), trunc_size(ih * s));
            if rw == 0 || rh == 0 {
                return Err(geometry(format!(
                    "letterboxing onto {h}x{w} would scale it to {rw}x{rh} pixels"
                )));
            }
            let (ox, oy) = match cfg.pad_type {
                PadType::Center => ((w - rw) / 2, (h - rh) / 2),
                PadType::Normal => (0, 0),
            };
            Ok(at(rw, rh, signed(ox), signed(oy)))
        }
        KeepRatioMode::ShortSideScale => {
            let s = (as_f64(w) / iw).max(as_f64(h) / ih);
            let rw = if iw * s >= as_f64(w) {
                trunc_size(iw * s)
            } else {
                w
            };
            let rh = if ih * s >= as_f64(h) {
                trunc_size(ih * s)
            } else {
                h
            };
            Ok(at(rw, rh, -signed((rw - w) / 2), -signed((rh - h) / 2)))
        }
    }
}

/// Resizes to `resize_dims` with the configured mode; the result is exactly
/// `[h, w]` of `resize_dims`.
fn resize_to_dims(img: &Image, cfg: &PreprocessConfig) -> Result<Image, DataError> {
    let [h, w] = cfg.effective_resize_dims();
    let p = canvas_placement(cfg, img.width(), img.height())?;
    let resized = resize_bilinear(img, p.resized_width, p.resized_height)?;
    let (rw, rh) = (p.resized_width, p.resized_height);
    if !cfg.keep_aspect_ratio {
        return Ok(resized);
    }
    match cfg.keep_ratio_mode {
        KeepRatioMode::Letterbox => {
            // Paste onto a `pad_value` canvas; the offsets are not negative here.
            let (ox, oy) = (p.left.unsigned_abs(), p.top.unsigned_abs());
            let mut canvas = Image::filled(w, h, img.layout(), cfg.pad_value);
            let c = img.channels();
            let row_len = w * c;
            for (y, src) in (0..rh).map(|y| (y, resized.row(y))) {
                let start = (oy + y) * row_len + ox * c;
                canvas.data_mut()[start..start + rw * c].copy_from_slice(src);
            }
            Ok(canvas)
        }
        KeepRatioMode::ShortSideScale => {
            crop(&resized, p.top.unsigned_abs(), p.left.unsigned_abs(), h, w)
        }
    }
}

fn crop(img: &Image, top: usize, left: usize, h: usize, w: usize) -> Result<Image, DataError> {
    if (top, left, h, w) == (0, 0, img.height(), img.width()) {
        return Ok(img.clone());
    }
    let c = img.channels();
    let mut data = Vec::with_capacity(h * w * c);
    for y in top..top + h {
        data.extend_from_slice(&img.row(y)[left * c..(left + w) * c]);
    }
    Image::new(w, h, img.layout(), data)
}

fn preprocess_into_vec(img: &Image, cfg: &PreprocessConfig) -> Result<Vec<f32>, DataError> {
    let layout = layout_for(cfg.pixel_format);
    let converted;
    let img = if img.layout() == layout {
        img
    } else {
        converted = img.to_layout(layout);
        &converted
    };
    let resized = resize_to_dims(img, cfg)?;
    let [rh, rw] = cfg.effective_resize_dims();
    let [nh, nw] = cfg.net_dims();
    // validate() guarantees resize_dims >= net dims.
    let (top, left) = (rh / 2 - nh / 2, rw / 2 - nw / 2);

    let c = layout.channels();
    // Output channel k reads source channel order[k].
    let order: &[usize] = match cfg.pixel_format {
        PixelFormat::Bgr => &[2, 1, 0],
        PixelFormat::Rgb => &[0, 1, 2],
        PixelFormat::Gray => &[0],
        PixelFormat::Rgba => &[0, 1, 2, 3],
    };
    let (mean, scale) = (&cfg.mean[..c], &cfg.scale[..c]);
    let mut out = vec![0f32; c * nh * nw];
    match cfg.channel_format {
        ChannelFormat::Nchw => {
            for (k, plane) in out.chunks_exact_mut(nh * nw).enumerate() {
                let (src_k, m, s) = (order[k], mean[k], scale[k]);
                for (y, dst) in plane.chunks_exact_mut(nw).enumerate() {
                    let row = &resized.row(top + y)[left * c..(left + nw) * c];
                    for (d, px) in dst.iter_mut().zip(row.chunks_exact(c)) {
                        *d = (f32::from(px[src_k]) - m) * s;
                    }
                }
            }
        }
        ChannelFormat::Nhwc => {
            for (y, dst) in out.chunks_exact_mut(nw * c).enumerate() {
                let row = &resized.row(top + y)[left * c..(left + nw) * c];
                for (d, px) in dst.chunks_exact_mut(c).zip(row.chunks_exact(c)) {
                    for k in 0..c {
                        d[k] = (f32::from(px[order[k]]) - mean[k]) * scale[k];
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> Image {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x % 256) as u8, (y % 256) as u8, 7]))
            .collect();
        Image::new(w, h, ColorLayout::Rgb, data).unwrap()
    }

    #[test]
    fn stretch_bgr_nchw_normalises_per_channel() {
        let img = gradient(4, 4);
        let mut cfg = PreprocessConfig::new([1, 3, 4, 4]);
        cfg.mean = vec![1.0, 2.0, 3.0];
        cfg.scale = vec![0.5, 1.0, 2.0];
        let t = preprocess(&img, &cfg).unwrap();
        assert_eq!(t.dims(), &[1, 3, 4, 4]);
        let v = t.as_f32().unwrap();
        // Channel 0 is B = 7: (7 - 1) * 0.5.
        assert_eq!(v[0], 3.0);
        // Channel 2 is R = x: pixel (y=0, x=3) -> (3 - 3) * 2.
        assert_eq!(v[2 * 16 + 3], 0.0);
        assert_eq!(v[16 + 4], (1.0 - 2.0) * 1.0); // G = y = 1 at (1, 0)
    }

    #[test]
    fn nhwc_is_the_transpose_of_nchw() {
        let img = gradient(9, 5);
        let mut cfg = PreprocessConfig::new([1, 3, 6, 6]);
        cfg.pixel_format = PixelFormat::Rgb;
        let a = preprocess(&img, &cfg).unwrap();
        cfg.input_shape = [1, 6, 6, 3];
        cfg.channel_format = ChannelFormat::Nhwc;
        let b = preprocess(&img, &cfg).unwrap();
        assert_eq!(b.dims(), &[1, 6, 6, 3]);
        let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        for k in 0..3 {
            for p in 0..36 {
                assert_eq!(a[k * 36 + p], b[p * 3 + k]);
            }
        }
    }

    #[test]
    fn letterbox_places_the_image_and_pads() {
        // 8x4 onto 4x4: s = 0.5, resized 4x2 (exact halving).
        let img = Image::filled(8, 4, ColorLayout::Rgb, 200);
        let mut cfg = PreprocessConfig::new([1, 3, 4, 4]);
        cfg.keep_aspect_ratio = true;
        cfg.pad_value = 114;
        let center = preprocess(&img, &cfg).unwrap();
        let rows: Vec<f32> = center.as_f32().unwrap()[..16]
            .chunks(4)
            .map(|r| r[0])
            .collect();
        assert_eq!(rows, vec![114.0, 200.0, 200.0, 114.0]);
        cfg.pad_type = PadType::Normal;
        let normal = preprocess(&img, &cfg).unwrap();
        let rows: Vec<f32> = normal.as_f32().unwrap()[..16]
            .chunks(4)
            .map(|r| r[0])
            .collect();
        assert_eq!(rows, vec![200.0, 200.0, 114.0, 114.0]);
    }

    #[test]
    fn short_side_scale_and_centre_crop() {
        let img = gradient(20, 10);
        let mut cfg = PreprocessConfig::new([1, 3, 4, 4]);
        cfg.keep_aspect_ratio = true;
        cfg.keep_ratio_mode = KeepRatioMode::ShortSideScale;
        cfg.resize_dims = Some([6, 6]);
        // s = max(6/20, 6/10) = 0.6 -> 12x6, crop cols 3..9 -> 6x6, centre crop 1..5.
        let t = preprocess(&img, &cfg).unwrap();
        assert_eq!(t.dims(), &[1, 3, 4, 4]);
        let resized = resize_bilinear(&img, 12, 6).unwrap();
        let expect = f32::from(resized.row(1)[(3 + 1) * 3]);
        assert_eq!(t.as_f32().unwrap()[2 * 16], expect); // channel 2 = R (bgr)
    }

    #[test]
    fn gray_and_rgba_inputs() {
        let img = gradient(4, 4);
        let mut cfg = PreprocessConfig::new([1, 1, 4, 4]);
        cfg.pixel_format = PixelFormat::Gray;
        assert_eq!(preprocess(&img, &cfg).unwrap().dims(), &[1, 1, 4, 4]);
        let mut cfg = PreprocessConfig::new([1, 4, 4, 4]);
        cfg.pixel_format = PixelFormat::Rgba;
        cfg.mean = vec![0.0; 4];
        cfg.scale = vec![1.0; 4];
        let t = preprocess(&img, &cfg).unwrap();
        assert!(t.as_f32().unwrap()[48..].iter().all(|&a| a == 255.0));
    }

    #[test]
    fn batch_repeats_the_last_image() {
        let mut cfg = PreprocessConfig::new([3, 3, 2, 2]);
        cfg.pixel_format = PixelFormat::Rgb;
        let a = Image::filled(2, 2, ColorLayout::Rgb, 1);
        let b = Image::filled(2, 2, ColorLayout::Rgb, 2);
        let t = preprocess_batch(&[a.clone(), b], &cfg).unwrap();
        assert_eq!(t.dims(), &[3, 3, 2, 2]);
        let v = t.as_f32().unwrap();
        assert_eq!((v[0], v[12], v[24]), (1.0, 2.0, 2.0));
        assert!(preprocess_batch(&[], &cfg).is_err());
        assert!(preprocess_batch(&[a.clone(), a.clone(), a.clone(), a], &cfg).is_err());
    }

    #[test]
    fn placement_of_each_resize_mode() {
        let place = |cfg: &PreprocessConfig, w, h| {
            let p = placement(cfg, w, h).unwrap();
            (p.resized_width, p.resized_height, p.left, p.top)
        };
        // Stretch onto 6x6, centre crop to 4x4: starts at (1, 1).
        let mut cfg = PreprocessConfig::new([1, 3, 4, 4]);
        cfg.resize_dims = Some([6, 6]);
        assert_eq!(place(&cfg, 20, 10), (6, 6, -1, -1));
        // Letterbox 20x10 onto 4x4: s = 0.2, 4x2, centred 1 row down.
        let mut cfg = PreprocessConfig::new([1, 3, 4, 4]);
        cfg.keep_aspect_ratio = true;
        assert_eq!(place(&cfg, 20, 10), (4, 2, 0, 1));
        cfg.pad_type = PadType::Normal;
        assert_eq!(place(&cfg, 20, 10), (4, 2, 0, 0));
        // Short side 20x10 onto 6x6: 12x6, cropped 3 columns, then 1 more.
        cfg.keep_ratio_mode = KeepRatioMode::ShortSideScale;
        cfg.resize_dims = Some([6, 6]);
        assert_eq!(place(&cfg, 20, 10), (12, 6, -4, -1));
    }

    #[test]
    fn extreme_letterbox_is_an_error_not_a_panic() {
        let img = Image::filled(1000, 1, ColorLayout::Rgb, 0);
        let mut cfg = PreprocessConfig::new([1, 3, 4, 4]);
        cfg.keep_aspect_ratio = true;
        let e = preprocess(&img, &cfg).unwrap_err();
        assert!(e.to_string().contains("1000x1"), "{e}");
    }
}
