//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong between a detector's outputs and a written
/// image. Variants name the output, its shape, or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VisionError {
    #[error("the model has no outputs")]
    NoOutputs,
    #[error(
        "output `{output}` has shape {shape:?}, which is neither a YOLOX head [1, {anchors}, 5 + classes] \
         nor a YOLOv8 output [1, 4 + classes, {anchors}] ({anchors} anchors: strides 8, 16, 32 on the \
         {net_height}x{net_width} input)"
    )]
    UnknownLayout {
        output: String,
        shape: Vec<usize>,
        anchors: usize,
        net_height: usize,
        net_width: usize,
    },
    #[error(
        "output `{output}` has shape {shape:?}, which fits both YOLOX and YOLOv8; pass --format"
    )]
    AmbiguousLayout { output: String, shape: Vec<usize> },
    #[error("output `{output}` has shape {shape:?}; --format {format} expects {expected}")]
    ShapeMismatch {
        output: String,
        shape: Vec<usize>,
        format: &'static str,
        expected: String,
    },
    #[error("output `{output}` holds {dtype} data; detection needs float32")]
    NotFloat { output: String, dtype: String },
    #[error("cannot map boxes back to the image: {0}")]
    Placement(#[from] qtune_data::DataError),
    #[error("output image `{path}`: unknown extension (expected .png, .jpg or .jpeg)")]
    UnknownImageFormat { path: PathBuf },
    #[error("cannot encode `{path}`: {message}")]
    Encode { path: PathBuf, message: String },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
