//! The image preprocessing flags of TPU-MLIR's `model_transform`, shared by
//! every command that reads images. The settings and their validation are
//! the library's ([`qtune::Preprocess`]).

use anyhow::Result;
use qtune::Preprocess;
use qtune_data::{PreprocessConfig, PreprocessFlags};
use qtune_ir::mlir::MlirAttr;

#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
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
    #[arg(long, allow_hyphen_values = true)]
    mean: Option<String>,
    /// Per-channel scale, e.g. 0.0078125,0.0078125,0.0078125.
    #[arg(long, allow_hyphen_values = true)]
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
    /// The library's settings of these flags.
    pub fn settings(&self) -> Preprocess {
        let mut p = Preprocess::default();
        p.resize_dims = self.resize_dims.clone();
        p.keep_aspect_ratio = self.keep_aspect_ratio;
        p.keep_ratio_mode = self.keep_ratio_mode.clone();
        p.mean = self.mean.clone();
        p.scale = self.scale.clone();
        p.pixel_format = self.pixel_format.clone();
        p.channel_format = self.channel_format.clone();
        p.pad_value = self.pad_value.clone();
        p.pad_type = self.pad_type.clone();
        p
    }

    fn of(p: Preprocess) -> Self {
        let p = PreprocessFlags::from(p);
        PreprocessArgs {
            resize_dims: p.resize_dims,
            keep_aspect_ratio: p.keep_aspect_ratio,
            keep_ratio_mode: p.keep_ratio_mode,
            mean: p.mean,
            scale: p.scale,
            pixel_format: p.pixel_format,
            channel_format: p.channel_format,
            pad_value: p.pad_value,
            pad_type: p.pad_type,
        }
    }

    /// Whether `--channel_format nhwc` was given.
    pub fn is_nhwc(&self) -> bool {
        self.settings().is_nhwc()
    }

    /// The `top.Input` attributes TPU-MLIR's model_transform stores for an
    /// image input ([`Preprocess::input_attrs`]).
    pub fn input_attrs(&self, cfg: &PreprocessConfig) -> Result<Vec<(String, MlirAttr)>> {
        Ok(self.settings().input_attrs(cfg)?)
    }

    /// The flags of the `top.Input` attributes of an .mlir
    /// ([`Preprocess::from_input_attrs`]).
    pub fn from_input_attrs(attrs: &[(String, MlirAttr)]) -> Option<Self> {
        Preprocess::from_input_attrs(attrs).map(Self::of)
    }

    /// The validated configuration for a network input of `shape`.
    pub fn config(&self, shape: &[usize]) -> Result<PreprocessConfig> {
        Ok(self.settings().config(shape)?)
    }
}

/// The preprocessing of a one-image-input model ([`qtune::model_preprocess`]).
pub fn model_preprocess(
    flags: &PreprocessArgs,
    loaded: &crate::model::LoadedModel,
    model: &std::path::Path,
    command: &str,
) -> Result<PreprocessConfig> {
    Ok(qtune::model_preprocess(
        &flags.settings(),
        loaded,
        model,
        command,
    )?)
}
