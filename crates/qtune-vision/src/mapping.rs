//! From network-input pixels back to the source image.

use qtune_data::{PreprocessConfig, placement};

use crate::boxes::BoundingBox;
use crate::error::VisionError;

/// The inverse of the geometric part of the preprocessing (resize, letterbox,
/// short-side crop, centre crop) for one source image.
///
/// A network point `(x, y)` maps to
/// `((x - left) * width / resized_width, (y - top) * height / resized_height)`
/// (see [`qtune_data::Placement`]), in `f64`, then clipped to the image.
/// The scale is the resize's own ratio per axis (`width / trunc(width * s)` for
/// a letterbox), not the nominal `1 / s`, so that a box edge on the last
/// resized pixel lands on the last source pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputMapping {
    net_dims: [usize; 2],
    width: f64,
    height: f64,
    left: f64,
    top: f64,
    scale_x: f64,
    scale_y: f64,
}

#[allow(clippy::cast_precision_loss)] // image sizes and offsets are far below 2^52
fn to_f64(x: usize) -> f64 {
    x as f64
}

#[allow(clippy::cast_precision_loss)]
fn signed_to_f64(x: isize) -> f64 {
    x as f64
}

#[allow(clippy::cast_possible_truncation)] // pixel coordinates fit f32
fn to_f32(x: f64) -> f32 {
    x as f32
}

impl InputMapping {
    /// The mapping for a `width` x `height` source image preprocessed with
    /// `cfg`.
    pub fn new(cfg: &PreprocessConfig, width: usize, height: usize) -> Result<Self, VisionError> {
        let p = placement(cfg, width, height)?;
        Ok(InputMapping {
            net_dims: cfg.net_dims(),
            width: to_f64(width),
            height: to_f64(height),
            left: signed_to_f64(p.left),
            top: signed_to_f64(p.top),
            scale_x: to_f64(width) / to_f64(p.resized_width),
            scale_y: to_f64(height) / to_f64(p.resized_height),
        })
    }

    /// The network input's `[h, w]`.
    pub fn net_dims(&self) -> [usize; 2] {
        self.net_dims
    }

    /// A box in network-input pixels as a box on the source image, clipped
    /// to it.
    pub fn to_source(&self, b: BoundingBox) -> BoundingBox {
        let x = |v: f32| to_f32(((f64::from(v) - self.left) * self.scale_x).clamp(0.0, self.width));
        let y = |v: f32| to_f32(((f64::from(v) - self.top) * self.scale_y).clamp(0.0, self.height));
        BoundingBox {
            x1: x(b.x1),
            y1: y(b.y1),
            x2: x(b.x2),
            y2: y(b.y2),
        }
    }
}

#[cfg(test)]
mod tests {
    use qtune_data::{KeepRatioMode, PadType};

    use super::*;

    fn bb(x1: f32, y1: f32, x2: f32, y2: f32) -> BoundingBox {
        BoundingBox { x1, y1, x2, y2 }
    }

    #[test]
    fn letterbox_inverse() {
        // 640x480 onto 416x416: s = min(0.65, 0.8667) = 0.65, resized 416x312.
        let mut cfg = PreprocessConfig::new([1, 3, 416, 416]);
        cfg.keep_aspect_ratio = true;
        cfg.pad_type = PadType::Normal;
        let m = InputMapping::new(&cfg, 640, 480).unwrap();
        // x * 640 / 416, y * 480 / 312.
        assert_eq!(
            m.to_source(bb(104.0, 52.0, 208.0, 156.0)),
            bb(160.0, 80.0, 320.0, 240.0)
        );
        // Parts in the pad or past the edges are clipped to the image.
        // 300 * 480 / 312 = 461.538...
        let clipped = m.to_source(bb(-10.0, 300.0, 500.0, 350.0));
        assert_eq!((clipped.x1, clipped.x2, clipped.y2), (0.0, 640.0, 480.0));
        assert!((clipped.y1 - 461.538_46).abs() < 1e-3, "{clipped:?}");
        // Centred: 52 rows of pad above the image.
        cfg.pad_type = PadType::Center;
        let m = InputMapping::new(&cfg, 640, 480).unwrap();
        assert_eq!(
            m.to_source(bb(104.0, 104.0, 208.0, 208.0)),
            bb(160.0, 80.0, 320.0, 240.0)
        );
    }

    #[test]
    fn stretch_and_crop_inverse() {
        // 100x50 stretched to 40x40, centre-cropped to 32x32 from (4, 4):
        // the network's corners are the canvas' (4, 4) and (36, 36).
        let mut cfg = PreprocessConfig::new([1, 3, 32, 32]);
        cfg.resize_dims = Some([40, 40]);
        let m = InputMapping::new(&cfg, 100, 50).unwrap();
        assert_eq!(
            m.to_source(bb(0.0, 0.0, 32.0, 32.0)),
            bb(10.0, 5.0, 90.0, 45.0)
        );
        // Short side: 100x50 onto 40x40 -> 80x40, 20 columns cropped, then 4.
        cfg.keep_aspect_ratio = true;
        cfg.keep_ratio_mode = KeepRatioMode::ShortSideScale;
        let m = InputMapping::new(&cfg, 100, 50).unwrap();
        // Network x 0 is resized x 24, source 24 * 100 / 80 = 30.
        assert_eq!(
            m.to_source(bb(0.0, 0.0, 32.0, 32.0)),
            bb(30.0, 5.0, 70.0, 45.0)
        );
    }
}
