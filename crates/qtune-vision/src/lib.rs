//! Detection post-processing for qtune, the counterpart of TPU-MLIR's
//! `detect_yolov3` example: what turns a detector's output tensor into boxes
//! on the original photo.
//!
//! * [`head`]: recognises a YOLOX raw head or a decoded YOLOv8 output from
//!   its shape and decodes it into scored boxes in network-input pixels.
//! * [`boxes`]: boxes, IoU and per-class non-maximum suppression.
//! * [`mapping`]: network-input pixels back to the source image through the
//!   resize, letterbox and crop of the preprocessing.
//! * [`draw`] and [`encode`]: boxes drawn into the image, written as PNG or
//!   JPEG.
//!
//! [`detect_on_outputs`] chains the first three on the outputs of one run, so
//! that any way of running a model (float, fake-quantized) shares them.

pub mod boxes;
pub mod draw;
pub mod encode;
mod error;
pub mod head;
pub mod mapping;

pub use boxes::{BoundingBox, Detection, iou, non_max_suppression};
pub use draw::{Canvas, class_color, draw_detections};
pub use encode::{ImageFileFormat, write_image};
pub use error::VisionError;
pub use head::{HeadFormat, HeadLayout, decode, detect_layout};
pub use mapping::InputMapping;

use qtune_tensor::Tensor;

/// Thresholds and head format of a detection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DetectParams {
    /// How to read the output; [`HeadFormat::Auto`] recognises it by shape.
    pub format: HeadFormat,
    /// An anchor is a candidate when its best class score is at least this.
    pub conf: f32,
    /// NMS drops a box whose IoU with a kept box of its class exceeds this.
    pub iou: f32,
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams {
            format: HeadFormat::Auto,
            conf: 0.25,
            iou: 0.45,
        }
    }
}

/// What [`detect_on_outputs`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// The output that was decoded.
    pub output: String,
    pub layout: HeadLayout,
    /// In NMS order (score descending, then anchor index), in source-image
    /// pixels.
    pub boxes: Vec<Detection>,
}

/// Boxes on the source image from the outputs of one run of a detector.
///
/// `outputs` are the graph outputs by name, in model order; the first one
/// whose shape fits the head format is used (the two supported heads have a
/// single output); when none fits, the error is the first output's. Boxes are
/// decoded ([`decode`]), filtered by NMS ([`non_max_suppression`]), then
/// mapped back through `mapping` and clipped to the image.
pub fn detect_on_outputs(
    outputs: &[(String, Tensor)],
    params: &DetectParams,
    mapping: &InputMapping,
) -> Result<Detections, VisionError> {
    let mut first_error = None;
    for (name, tensor) in outputs {
        let layout = match detect_layout(name, tensor.dims(), mapping.net_dims(), params.format) {
            Ok(layout) => layout,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        let values = tensor.as_f32().map_err(|_| VisionError::NotFloat {
            output: name.clone(),
            dtype: tensor.dtype().name().to_string(),
        })?;
        let candidates = decode(values, &layout, mapping.net_dims(), params.conf);
        let mut boxes = non_max_suppression(candidates, params.iou);
        for d in &mut boxes {
            d.bbox = mapping.to_source(d.bbox);
        }
        return Ok(Detections {
            output: name.clone(),
            layout,
            boxes,
        });
    }
    Err(first_error.unwrap_or(VisionError::NoOutputs))
}

#[cfg(test)]
mod tests {
    use qtune_data::PreprocessConfig;

    use super::*;

    #[test]
    fn outputs_to_boxes_on_the_source_image() {
        // A one-class YOLOX head on a 64x64 input (84 anchors), for a 128x128
        // source stretched onto it (every coordinate doubles).
        let mut v = vec![0f32; 84 * 6];
        // Rows 9 and 10: stride 8, cells (1, 1) and (2, 1): 8x8 boxes 8 px
        // apart, IoU 0; row 18, cell (2, 2) with a wider box overlapping row 10.
        v[9 * 6..10 * 6].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.9]);
        v[10 * 6..11 * 6].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.5]);
        v[18 * 6..19 * 6].copy_from_slice(&[0.0, -0.5, 2f32.ln(), 2f32.ln(), 1.0, 0.7]);
        let outputs = vec![
            (
                "extra".to_string(),
                Tensor::from_f32(vec![1, 2], vec![0.0; 2]).unwrap(),
            ),
            (
                "output".to_string(),
                Tensor::from_f32(vec![1, 84, 6], v).unwrap(),
            ),
        ];
        let mapping = InputMapping::new(&PreprocessConfig::new([1, 3, 64, 64]), 128, 128).unwrap();
        let found = detect_on_outputs(&outputs, &DetectParams::default(), &mapping).unwrap();
        assert_eq!(found.output, "output");
        assert_eq!(found.layout.classes(), 1);
        // Row 18: centre (16, 12), 16x16 -> (8, 4, 24, 20) in the network,
        // doubled. It overlaps row 10's (12, 4, 20, 12) by 8x8 = 64 of a union
        // of 256 + 64 - 64: IoU 0.25, kept.
        let got: Vec<(usize, [f32; 4])> = found
            .boxes
            .iter()
            .map(|d| (d.anchor, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]))
            .collect();
        assert_eq!(
            got,
            vec![
                (9, [8.0, 8.0, 24.0, 24.0]),
                (18, [16.0, 8.0, 48.0, 40.0]),
                (10, [24.0, 8.0, 40.0, 24.0]),
            ]
        );
        // With a 0.2 IoU threshold row 10 goes.
        let strict = DetectParams {
            iou: 0.2,
            ..DetectParams::default()
        };
        let found = detect_on_outputs(&outputs, &strict, &mapping).unwrap();
        assert_eq!(found.boxes.len(), 2);
        // No fitting output: the error names the first one.
        let e = detect_on_outputs(&outputs[..1], &strict, &mapping).unwrap_err();
        assert!(e.to_string().contains("`extra`"), "{e}");
    }
}
