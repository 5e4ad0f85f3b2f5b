//! YOLOX and YOLOv8 outputs: recognising them by shape and decoding them.
//!
//! Both heads predict one box per anchor point of three feature maps, with
//! strides 8, 16 and 32 on an `H` x `W` input, so a head has
//! `A = (H/8)(W/8) + (H/16)(W/16) + (H/32)(W/32)` anchors
//! (3549 for 416x416, 2100 for 320x320).
//!
//! * YOLOX raw head, `[1, A, 5 + C]`: one row per anchor, `[x, y, w, h, obj,
//!   cls_0 .. cls_C-1]`, rows ordered stride 8 first, row-major within a map.
//!   Decoded as in YOLOX's `decode_outputs`: `cx = (x + gx) * s`,
//!   `cy = (y + gy) * s`, `w = exp(w) * s`, `h = exp(h) * s`; the class
//!   scores are `obj * cls_c` (both already sigmoid-ed in the graph).
//! * YOLOv8 decoded output, `[1, 4 + C, A]`: one column per anchor,
//!   `cx, cy, w, h` in input pixels, then the C class scores (sigmoid-ed).
//!
//! Layout rule for `--format auto`: a rank-3, batch-1 output is YOLOX when
//! its second dimension is `A` and its last is at least 6, YOLOv8 when its
//! last dimension is `A` and its second at least 5. Anything else, or a
//! shape that fits both, is an error that names the output and its shape.
//!
//! Each anchor contributes its best class (the lowest class index on ties),
//! as YOLOX's and Ultralytics' single-label post-processing do, when that
//! score is at least the confidence threshold.

use crate::boxes::{BoundingBox, Detection};
use crate::error::VisionError;

/// The strides of the three feature maps, in output order.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// How to read a detector's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadFormat {
    /// Recognise YOLOX or YOLOv8 from the shape (see the module docs).
    #[default]
    Auto,
    Yolox,
    Yolov8,
}

/// A recognised output layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// `[1, anchors, 5 + classes]`.
    Yolox { anchors: usize, classes: usize },
    /// `[1, 4 + classes, anchors]`.
    Yolov8 { anchors: usize, classes: usize },
}

impl HeadLayout {
    pub fn classes(&self) -> usize {
        match *self {
            HeadLayout::Yolox { classes, .. } | HeadLayout::Yolov8 { classes, .. } => classes,
        }
    }
}

impl std::fmt::Display for HeadLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            HeadLayout::Yolox { anchors, classes } => {
                write!(f, "YOLOX head, {anchors} anchors, {classes} classes")
            }
            HeadLayout::Yolov8 { anchors, classes } => {
                write!(f, "YOLOv8 output, {anchors} anchors, {classes} classes")
            }
        }
    }
}

/// `A`, the number of anchor points on a `[h, w]` input (see the module docs).
pub fn anchor_count(net_dims: [usize; 2]) -> usize {
    let [h, w] = net_dims;
    STRIDES.iter().map(|s| (h / s) * (w / s)).sum()
}

/// The layout of output `output` of shape `dims`, for a network input of
/// `net_dims = [h, w]`. A forced YOLOX format still needs `A` rows (its grid
/// is implied); a forced YOLOv8 format accepts any number of columns.
pub fn detect_layout(
    output: &str,
    dims: &[usize],
    net_dims: [usize; 2],
    format: HeadFormat,
) -> Result<HeadLayout, VisionError> {
    let anchors = anchor_count(net_dims);
    let yolox = match *dims {
        [1, n, k] if n == anchors && k >= 6 => Some(HeadLayout::Yolox {
            anchors,
            classes: k - 5,
        }),
        _ => None,
    };
    let yolov8 = |any_count: bool| match *dims {
        [1, k, n] if (any_count || n == anchors) && n > 0 && k >= 5 => Some(HeadLayout::Yolov8 {
            anchors: n,
            classes: k - 4,
        }),
        _ => None,
    };
    let mismatch = |format: &'static str, expected: String| VisionError::ShapeMismatch {
        output: output.to_string(),
        shape: dims.to_vec(),
        format,
        expected,
    };
    match format {
        HeadFormat::Yolox => yolox.ok_or_else(|| {
            mismatch(
                "yolox",
                format!(
                    "[1, {anchors}, 5 + classes] (strides 8, 16, 32 on the {}x{} input)",
                    net_dims[0], net_dims[1]
                ),
            )
        }),
        HeadFormat::Yolov8 => {
            yolov8(true).ok_or_else(|| mismatch("yolov8", "[1, 4 + classes, anchors]".into()))
        }
        HeadFormat::Auto => match (yolox, yolov8(false)) {
            (Some(layout), None) | (None, Some(layout)) => Ok(layout),
            (Some(_), Some(_)) => Err(VisionError::AmbiguousLayout {
                output: output.to_string(),
                shape: dims.to_vec(),
            }),
            (None, None) => Err(VisionError::UnknownLayout {
                output: output.to_string(),
                shape: dims.to_vec(),
                anchors,
                net_height: net_dims[0],
                net_width: net_dims[1],
            }),
        },
    }
}

/// The best class of one anchor and its score; the first one on ties.
fn best_class(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (c, s) in scores.enumerate() {
        if s > best.1 {
            best = (c, s);
        }
    }
    best
}

#[allow(clippy::cast_precision_loss)] // grid coordinates and strides are small
fn as_f32(x: usize) -> f32 {
    x as f32
}

/// The candidates of one output (`values` in row-major order, of the shape
/// `layout` was recognised from): every anchor whose best class score is at
/// least `conf`, as a box in network-input pixels.
pub fn decode(
    values: &[f32],
    layout: &HeadLayout,
    net_dims: [usize; 2],
    conf: f32,
) -> Vec<Detection> {
    let mut out = Vec::new();
    match *layout {
        HeadLayout::Yolox { anchors, classes } => {
            let width = 5 + classes;
            let [h, w] = net_dims;
            let mut anchor = 0;
            for stride in STRIDES {
                let (grid_h, grid_w) = (h / stride, w / stride);
                let s = as_f32(stride);
                for cell in 0..grid_h * grid_w {
                    let Some(row) = values.get(anchor * width..(anchor + 1) * width) else {
                        return out;
                    };
                    let obj = row[4];
                    let (class, score) = best_class(row[5..].iter().map(|&c| obj * c));
                    if score >= conf {
                        let (gx, gy) = (as_f32(cell % grid_w), as_f32(cell / grid_w));
                        out.push(Detection {
                            class,
                            score,
                            anchor,
                            bbox: BoundingBox::from_center(
                                (row[0] + gx) * s,
                                (row[1] + gy) * s,
                                row[2].exp() * s,
                                row[3].exp() * s,
                            ),
                        });
                    }
                    anchor += 1;
                }
            }
            debug_assert_eq!(anchor, anchors);
        }
        HeadLayout::Yolov8 { anchors, classes } => {
            let at = |row: usize, col: usize| values.get(row * anchors + col).copied();
            for col in 0..anchors {
                let (class, score) =
                    best_class((0..classes).map(|c| at(4 + c, col).unwrap_or(f32::NAN)));
                if score >= conf {
                    let [cx, cy, w, h] = [0, 1, 2, 3].map(|r| at(r, col).unwrap_or(f32::NAN));
                    out.push(Detection {
                        class,
                        score,
                        anchor: col,
                        bbox: BoundingBox::from_center(cx, cy, w, h),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_counts_of_the_workload_detectors() {
        assert_eq!(anchor_count([416, 416]), 52 * 52 + 26 * 26 + 13 * 13);
        assert_eq!(anchor_count([416, 416]), 3549);
        assert_eq!(anchor_count([320, 320]), 2100);
        assert_eq!(anchor_count([64, 32]), 8 * 4 + 4 * 2 + 2);
    }

    #[test]
    fn layout_from_shape() {
        let auto = |dims: &[usize], net| detect_layout("out", dims, net, HeadFormat::Auto);
        assert_eq!(
            auto(&[1, 3549, 6], [416, 416]).unwrap(),
            HeadLayout::Yolox {
                anchors: 3549,
                classes: 1
            }
        );
        assert_eq!(
            auto(&[1, 22, 2100], [320, 320]).unwrap(),
            HeadLayout::Yolov8 {
                anchors: 2100,
                classes: 18
            }
        );
        let e = auto(&[1, 22, 2099], [320, 320]).unwrap_err().to_string();
        assert!(
            e.contains("`out`") && e.contains("[1, 22, 2099]") && e.contains("2100"),
            "{e}"
        );
        assert!(auto(&[2, 3549, 6], [416, 416]).is_err());
        assert!(auto(&[1, 1000], [224, 224]).is_err());
        // 84 anchors on 64x64: [1, 84, 84] reads either way.
        let e = auto(&[1, 84, 84], [64, 64]).unwrap_err().to_string();
        assert!(e.contains("--format"), "{e}");
        assert!(detect_layout("out", &[1, 84, 84], [64, 64], HeadFormat::Yolox).is_ok());
        // Forcing: YOLOX needs its grid, YOLOv8 takes any anchor count.
        let e = detect_layout("output0", &[1, 22, 2100], [320, 320], HeadFormat::Yolox)
            .unwrap_err()
            .to_string();
        assert!(e.contains("output0") && e.contains("--format yolox"), "{e}");
        assert_eq!(
            detect_layout("out", &[1, 6, 10], [320, 320], HeadFormat::Yolov8).unwrap(),
            HeadLayout::Yolov8 {
                anchors: 10,
                classes: 2
            }
        );
    }

    #[test]
    fn yolox_rows_decode_on_their_grid_cell() {
        // A 64x64 input: 8x8 cells of stride 8 (rows 0..64), 4x4 of stride
        // 16 (64..80), 2x2 of stride 32 (80..84); one class.
        let layout = HeadLayout::Yolox {
            anchors: 84,
            classes: 1,
        };
        let mut v = vec![0f32; 84 * 6];
        // Row 9: stride 8, cell (1, 1): centre (8, 8), size 8x8; score 0.81.
        v[9 * 6..10 * 6].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.9, 0.9]);
        // Row 70: stride 16, cell 6 of a 4-wide grid = (2, 1):
        // centre ((0.5 + 2) 16, (0.25 + 1) 16) = (40, 20), size (2 * 16, 1 * 16);
        // score 0.8 * 0.5.
        v[70 * 6..71 * 6].copy_from_slice(&[0.5, 0.25, 2f32.ln(), 0.0, 0.8, 0.5]);
        // Row 83: stride 32, cell (1, 1), under the threshold.
        v[83 * 6..84 * 6].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.5, 0.2]);
        let got = decode(&v, &layout, [64, 64], 0.25);
        assert_eq!(got.len(), 2, "{got:?}");
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        let (a, b) = (&got[0], &got[1]);
        assert_eq!((a.anchor, a.class), (9, 0));
        assert!(close(a.score, 0.81));
        assert_eq!(a.bbox, BoundingBox::from_center(8.0, 8.0, 8.0, 8.0));
        assert_eq!((b.anchor, b.class), (70, 0));
        assert!(close(b.score, 0.4));
        let want = [24.0, 12.0, 56.0, 28.0];
        let have = [b.bbox.x1, b.bbox.y1, b.bbox.x2, b.bbox.y2];
        assert!(have.iter().zip(want).all(|(&h, w)| close(h, w)), "{have:?}");
    }

    #[test]
    fn yolov8_columns_take_their_best_class() {
        // 3 anchors, 2 classes: rows cx, cy, w, h, class 0, class 1.
        let layout = HeadLayout::Yolov8 {
            anchors: 3,
            classes: 2,
        };
        #[rustfmt::skip]
        let v = [
            10.0, 20.0, 30.0,  // cx
            10.0, 20.0, 30.0,  // cy
             4.0,  4.0,  4.0,  // w
             2.0,  2.0,  2.0,  // h
             0.3,  0.1,  0.6,  // class 0
             0.2,  0.9,  0.6,  // class 1 (tie at anchor 2: class 0 wins)
        ];
        let got = decode(&v, &layout, [32, 32], 0.25);
        let summary: Vec<(usize, usize, f32)> =
            got.iter().map(|d| (d.anchor, d.class, d.score)).collect();
        assert_eq!(summary, vec![(0, 0, 0.3), (1, 1, 0.9), (2, 0, 0.6)]);
        assert_eq!(got[1].bbox, BoundingBox::from_center(20.0, 20.0, 4.0, 2.0));
        assert_eq!(got[1].bbox.x1, 18.0);
    }
}
