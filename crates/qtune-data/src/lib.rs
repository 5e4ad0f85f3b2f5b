//! Dataset inputs for qtune: image decoding and TPU-MLIR-compatible
//! preprocessing.
//!
//! * [`PreprocessConfig`]: `model_transform`'s preprocessing attributes
//!   (`--resize_dims`, `--keep_aspect_ratio`, `--mean`, `--scale`, ...), with a
//!   flag parser ([`PreprocessConfig::from_flags`]).
//! * [`load_image`]: JPEG / PNG / BMP to 8-bit RGB, mirroring `cv2.imread`
//!   (see the [`decode`] module for gray, alpha, palette and EXIF handling).
//! * [`preprocess`]: resize (OpenCV INTER_LINEAR, bit-exact), letterbox or
//!   short-side scale, centre crop, channel order, `(x - mean) * scale`,
//!   NCHW / NHWC; it matches `shared/workloads/tools/preprocess.py`.
//! * [`preprocess_files`]: many files on a bounded, order-preserving thread
//!   pool.
//!
//! Reference: `shared/reference/tpu-mlir-quant-spec.md` section 6.

pub mod config;
pub mod decode;
mod error;
mod preprocess;
pub mod resize;
pub mod selection;
mod stream;

pub use config::{
    ChannelFormat, KeepRatioMode, PadType, PixelFormat, PreprocessConfig, PreprocessFlags,
    parse_f32_list, parse_usize_list,
};
pub use decode::{ColorLayout, Image, decode_image, load_image, load_image_as};
pub use error::DataError;
pub use preprocess::{Placement, layout_for, placement, preprocess, preprocess_batch};
pub use resize::{resize_bilinear, resize_bilinear_reference};
pub use selection::{
    Sample, SampleKind, Selection, python_shuffle, sample_kind, select_data_list, select_dataset,
};
pub use stream::{PreprocessFiles, preprocess_file, preprocess_files};
