//! Axis-aligned boxes, IoU and per-class non-maximum suppression.

/// A box in continuous pixel coordinates: `(x1, y1)` the top-left corner,
/// `(x2, y2)` the bottom-right one; a pixel `i` spans `[i, i + 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BoundingBox {
    /// The box of centre `(cx, cy)` and size `w` x `h`.
    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        BoundingBox {
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
        }
    }

    /// Width times height; 0 for an empty or inverted box.
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }
}

/// Intersection over union; 0 when the union is empty (two degenerate boxes).
pub fn iou(a: &BoundingBox, b: &BoundingBox) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    let union = a.area() + b.area() - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// One scored box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    /// The row (YOLOX) or column (YOLOv8) of the output it came from; breaks
    /// score ties so that the order never depends on anything else.
    pub anchor: usize,
    pub bbox: BoundingBox,
}

/// Greedy non-maximum suppression, class by class.
///
/// Candidates are visited by score descending, then anchor ascending; a
/// candidate is kept unless its IoU with an already kept box of the same
/// class is greater than `iou_threshold`. Boxes of different classes never
/// suppress each other. The result is in visiting order.
pub fn non_max_suppression(mut candidates: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.anchor.cmp(&b.anchor)));
    let mut kept: Vec<Detection> = Vec::new();
    for c in candidates {
        let suppressed = kept
            .iter()
            .any(|k| k.class == c.class && iou(&k.bbox, &c.bbox) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(x1: f32, y1: f32, x2: f32, y2: f32) -> BoundingBox {
        BoundingBox { x1, y1, x2, y2 }
    }

    #[test]
    fn iou_hand_computed() {
        struct Case {
            name: &'static str,
            a: BoundingBox,
            b: BoundingBox,
            expected: f32,
        }
        let cases = [
            Case {
                name: "identical",
                a: bb(0.0, 0.0, 2.0, 2.0),
                b: bb(0.0, 0.0, 2.0, 2.0),
                expected: 1.0,
            },
            Case {
                // Intersection 1x2 = 2, union 4 + 4 - 2 = 6.
                name: "half shifted",
                a: bb(0.0, 0.0, 2.0, 2.0),
                b: bb(1.0, 0.0, 3.0, 2.0),
                expected: 1.0 / 3.0,
            },
            Case {
                // Intersection 2x2 = 4 inside a 4x4 box: 4 / 16.
                name: "contained",
                a: bb(0.0, 0.0, 4.0, 4.0),
                b: bb(1.0, 1.0, 3.0, 3.0),
                expected: 0.25,
            },
            Case {
                // Intersection 1x1 of two 2x2 boxes: 1 / 7.
                name: "corner overlap",
                a: bb(0.0, 0.0, 2.0, 2.0),
                b: bb(1.0, 1.0, 3.0, 3.0),
                expected: 1.0 / 7.0,
            },
            Case {
                name: "touching edges",
                a: bb(0.0, 0.0, 2.0, 2.0),
                b: bb(2.0, 0.0, 4.0, 2.0),
                expected: 0.0,
            },
            Case {
                name: "disjoint",
                a: bb(0.0, 0.0, 1.0, 1.0),
                b: bb(5.0, 5.0, 6.0, 6.0),
                expected: 0.0,
            },
            Case {
                name: "two empty boxes",
                a: bb(1.0, 1.0, 1.0, 1.0),
                b: bb(1.0, 1.0, 1.0, 1.0),
                expected: 0.0,
            },
        ];
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|c| {
                let (ab, ba) = (iou(&c.a, &c.b), iou(&c.b, &c.a));
                let ok = (ab - c.expected).abs() <= f32::EPSILON && ab == ba;
                (!ok).then(|| format!("{}: got {ab} / {ba}, expected {}", c.name, c.expected))
            })
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    fn det(class: usize, score: f32, anchor: usize, bbox: BoundingBox) -> Detection {
        Detection {
            class,
            score,
            anchor,
            bbox,
        }
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let a = bb(0.0, 0.0, 10.0, 10.0);
        // IoU with `a`: 9x10 / (100 + 100 - 90) = 0.818.
        let a_shifted = bb(1.0, 0.0, 11.0, 10.0);
        // IoU with `a`: 5x10 / 150 = 0.333, under the threshold.
        let a_half = bb(5.0, 0.0, 15.0, 10.0);
        let far = bb(50.0, 50.0, 60.0, 60.0);
        let kept = non_max_suppression(
            vec![
                det(0, 0.6, 3, a_shifted),
                det(0, 0.9, 7, a),
                det(1, 0.5, 9, a_shifted), // another class: kept
                det(0, 0.4, 1, a_half),
                det(0, 0.3, 2, far),
            ],
            0.45,
        );
        let got: Vec<(usize, usize)> = kept.iter().map(|d| (d.class, d.anchor)).collect();
        assert_eq!(got, vec![(0, 7), (1, 9), (0, 1), (0, 2)]);
    }

    #[test]
    fn nms_threshold_is_exclusive_and_ties_go_by_anchor() {
        // IoU exactly 1/3 is not above a 1/3 threshold: both stay.
        let a = bb(0.0, 0.0, 2.0, 2.0);
        let b = bb(1.0, 0.0, 3.0, 2.0);
        let kept = non_max_suppression(vec![det(0, 0.5, 4, b), det(0, 0.5, 2, a)], iou(&a, &b));
        let order: Vec<usize> = kept.iter().map(|d| d.anchor).collect();
        assert_eq!(order, vec![2, 4]);
        // Below it, the equal-score box with the higher anchor goes.
        let kept = non_max_suppression(vec![det(0, 0.5, 4, b), det(0, 0.5, 2, a)], 0.3);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].anchor, 2);
        assert!(non_max_suppression(Vec::new(), 0.5).is_empty());
    }
}
