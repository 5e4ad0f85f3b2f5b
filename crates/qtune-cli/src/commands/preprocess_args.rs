//! The image preprocessing flags of TPU-MLIR's `model_transform`, shared by
//! every command that reads images.

use anyhow::Result;
use qtune_data::{PreprocessConfig, PreprocessFlags};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PreprocessArgs {
    /// Resize the image to h,w before cropping to the network input (default: the input size).
    #[arg(long = "resize_dims", alias = "resize-dims")]
    resize_dims: Option<String>,
    /// Keep the aspect ratio when resizing (letterbox or short-side scale).
    #[arg(long = "keep_aspect_ratio", alias = "keep-aspect-ratio")]
    keep_aspect_ratio: bool,
    /// letterbox | short_side_scale.
    #[arg(long = "keep_ratio_mode", alias = "keep-ratio-mode")]
    keep_ratio_mode: Option<String>,
    /// Per-channel mean, e.g. 127,127,127: y = (x - mean) * scale on 0..255 pixels.
    #[arg(long)]
    mean: Option<String>,
    /// Per-channel scale, e.g. 0.0078125,0.0078125,0.0078125.
    #[arg(long)]
    scale: Option<String>,
    /// rgb | bgr | gray | rgba: channel order fed to the network.
    #[arg(long = "pixel_format", alias = "pixel-format")]
    pixel_format: Option<String>,
    /// nchw | nhwc.
    #[arg(long = "channel_format", alias = "channel-format")]
    channel_format: Option<String>,
    /// Letterbox fill value (0..255).
    #[arg(long = "pad_value", alias = "pad-value")]
    pad_value: Option<String>,
    /// center | normal (normal: image at the top-left).
    #[arg(long = "pad_type", alias = "pad-type")]
    pad_type: Option<String>,
}

impl PreprocessArgs {
    /// The validated configuration for a network input of `shape`.
    pub fn config(&self, shape: &[usize]) -> Result<PreprocessConfig> {
        let shape: [usize; 4] = shape.try_into().map_err(|_| {
            anyhow::anyhow!("image input must have rank 4, the model's has shape {shape:?}")
        })?;
        let mut f = PreprocessFlags::default();
        let pairs = [
            ("resize_dims", &self.resize_dims),
            ("keep_ratio_mode", &self.keep_ratio_mode),
            ("mean", &self.mean),
            ("scale", &self.scale),
            ("pixel_format", &self.pixel_format),
            ("channel_format", &self.channel_format),
            ("pad_value", &self.pad_value),
            ("pad_type", &self.pad_type),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                f.set(name, Some(v))?;
            }
        }
        if self.keep_aspect_ratio {
            f.set("keep_aspect_ratio", None)?;
        }
        Ok(PreprocessConfig::from_flags(shape, &f)?)
    }
}
