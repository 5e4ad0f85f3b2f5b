//! Preprocessing configuration with TPU-MLIR `model_transform` semantics
//! (`python/utils/preprocess.py: preprocess.config` and `load_config`), and a
//! parser for the flag spellings (`--mean 127,127,127`, `--resize_dims 224,224`).

use std::fmt;
use std::str::FromStr;

use crate::error::DataError;

/// How `keep_aspect_ratio` reaches `resize_dims` (`--keep_ratio_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepRatioMode {
    /// Scale by `min(w / iw, h / ih)` and paste onto a `pad_value` canvas.
    #[default]
    Letterbox,
    /// Scale by `max(w / iw, h / ih)` and centre-crop to `resize_dims`.
    ShortSideScale,
}

/// Where a letterboxed image sits on its canvas (`--pad_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadType {
    /// Centred: offset `((w - rw) / 2, (h - rh) / 2)`.
    #[default]
    Center,
    /// Top-left corner.
    Normal,
}

/// Channel order (and count) of the tensor fed to the network (`--pixel_format`).
///
/// The raw Bayer formats (`gbrg`, ...) of TPU-MLIR are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelFormat {
    Rgb,
    /// TPU-MLIR's default: OpenCV's native order.
    #[default]
    Bgr,
    /// One channel, read as `cv2.IMREAD_GRAYSCALE` would (see [`crate::load_image_as`]).
    Gray,
    /// Four channels in R, G, B, A order; images without alpha get A = 255.
    Rgba,
}

impl PixelFormat {
    /// Number of channels of the network input for this format.
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray => 1,
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            PixelFormat::Rgba => 4,
        }
    }
}

/// Layout of the network input (`--channel_format`). TPU-MLIR's `none`
/// (not an image) has no variant: such inputs are not preprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelFormat {
    #[default]
    Nchw,
    Nhwc,
}

macro_rules! flag_enum {
    ($ty:ty, $flag:literal, [$($text:literal => $variant:path),+ $(,)?]) => {
        impl FromStr for $ty {
            type Err = DataError;
            fn from_str(s: &str) -> Result<Self, DataError> {
                match s.trim() {
                    $($text => Ok($variant),)+
                    _ => Err(DataError::Flag {
                        flag: $flag,
                        value: s.to_string(),
                        message: format!("expected one of {}", [$($text),+].join(", ")),
                    }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let text = match self {
                    $($variant => $text,)+
                };
                f.write_str(text)
            }
        }
    };
}

flag_enum!(KeepRatioMode, "keep_ratio_mode", [
    "letterbox" => KeepRatioMode::Letterbox,
    "short_side_scale" => KeepRatioMode::ShortSideScale,
]);
flag_enum!(PadType, "pad_type", ["center" => PadType::Center, "normal" => PadType::Normal]);
flag_enum!(PixelFormat, "pixel_format", [
    "rgb" => PixelFormat::Rgb,
    "bgr" => PixelFormat::Bgr,
    "gray" => PixelFormat::Gray,
    "rgba" => PixelFormat::Rgba,
]);
flag_enum!(ChannelFormat, "channel_format", ["nchw" => ChannelFormat::Nchw, "nhwc" => ChannelFormat::Nhwc]);

/// How one image input of a model is preprocessed: TPU-MLIR's Input-op
/// preprocess attributes plus the input shape.
///
/// The pipeline (see [`crate::preprocess`]) is: read, resize to
/// `resize_dims` (stretch, letterbox or short-side scale), centre-crop to the
/// network's H, W when `resize_dims` is larger, reorder channels, compute
/// `(x - mean[c]) * scale[c]` in float32, lay out as NCHW or NHWC.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PreprocessConfig {
    /// The input shape as the model declares it (`--input_shapes`): `[n, c, h, w]`
    /// for [`ChannelFormat::Nchw`], `[n, h, w, c]` for [`ChannelFormat::Nhwc`].
    pub input_shape: [usize; 4],
    /// `[h, w]` the image is resized to before the crop; `None` means the
    /// network's H, W (no crop).
    pub resize_dims: Option<[usize; 2]>,
    pub keep_aspect_ratio: bool,
    pub keep_ratio_mode: KeepRatioMode,
    /// Canvas fill for the letterbox, as a 0..255 pixel value (TPU-MLIR fills
    /// a uint8 canvas, so the value is an integer).
    pub pad_value: u8,
    pub pad_type: PadType,
    pub pixel_format: PixelFormat,
    pub channel_format: ChannelFormat,
    /// Per-channel mean in `pixel_format` order; at least as many values as
    /// channels, and only the first `channels` are used (TPU-MLIR's gray
    /// input uses the first value of `0,0,0`).
    pub mean: Vec<f32>,
    /// Per-channel scale, same rules as `mean`.
    pub scale: Vec<f32>,
}

impl Default for PreprocessConfig {
    /// TPU-MLIR's flag defaults for a `[1, 3, 224, 224]` input.
    fn default() -> Self {
        PreprocessConfig::new([1, 3, 224, 224])
    }
}

impl PreprocessConfig {
    /// TPU-MLIR's flag defaults (bgr, nchw, mean 0, scale 1, stretch resize
    /// to the network size) for a model input of this shape.
    pub fn new(input_shape: [usize; 4]) -> Self {
        PreprocessConfig {
            input_shape,
            resize_dims: None,
            keep_aspect_ratio: false,
            keep_ratio_mode: KeepRatioMode::Letterbox,
            pad_value: 0,
            pad_type: PadType::Center,
            pixel_format: PixelFormat::Bgr,
            channel_format: ChannelFormat::Nchw,
            mean: vec![0.0; 3],
            scale: vec![1.0; 3],
        }
    }

    /// Builds a configuration from `model_transform`-style flag values; absent
    /// flags take TPU-MLIR's defaults. The result is validated.
    pub fn from_flags(input_shape: [usize; 4], flags: &PreprocessFlags) -> Result<Self, DataError> {
        let mut cfg = PreprocessConfig::new(input_shape);
        if let Some(s) = &flags.resize_dims {
            let dims = parse_usize_list("resize_dims", s)?;
            cfg.resize_dims = Some(match dims[..] {
                [h, w] => [h, w],
                _ => {
                    return Err(DataError::Flag {
                        flag: "resize_dims",
                        value: s.clone(),
                        message: format!("expected 2 values `h,w`, got {}", dims.len()),
                    });
                }
            });
        }
        cfg.keep_aspect_ratio = flags.keep_aspect_ratio;
        if let Some(s) = &flags.keep_ratio_mode {
            cfg.keep_ratio_mode = s.parse()?;
        }
        if let Some(s) = &flags.pad_value {
            cfg.pad_value = s.trim().parse().map_err(|_| DataError::Flag {
                flag: "pad_value",
                value: s.clone(),
                message: "expected an integer in 0..=255".to_string(),
            })?;
        }
        if let Some(s) = &flags.pad_type {
            cfg.pad_type = s.parse()?;
        }
        if let Some(s) = &flags.pixel_format {
            cfg.pixel_format = s.parse()?;
        }
        if let Some(s) = &flags.channel_format {
            cfg.channel_format = s.parse()?;
        }
        if let Some(s) = &flags.mean {
            cfg.mean = parse_f32_list("mean", s)?;
        }
        if let Some(s) = &flags.scale {
            cfg.scale = parse_f32_list("scale", s)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Batch size (dim 0 of the input shape).
    pub fn batch(&self) -> usize {
        self.input_shape[0]
    }

    /// Channel count of the input shape.
    pub fn channels(&self) -> usize {
        match self.channel_format {
            ChannelFormat::Nchw => self.input_shape[1],
            ChannelFormat::Nhwc => self.input_shape[3],
        }
    }

    /// The network's `[h, w]` (TPU-MLIR `net_input_dims`).
    pub fn net_dims(&self) -> [usize; 2] {
        match self.channel_format {
            ChannelFormat::Nchw => [self.input_shape[2], self.input_shape[3]],
            ChannelFormat::Nhwc => [self.input_shape[1], self.input_shape[2]],
        }
    }

    /// `resize_dims`, defaulting to the network's `[h, w]`.
    pub fn effective_resize_dims(&self) -> [usize; 2] {
        self.resize_dims.unwrap_or_else(|| self.net_dims())
    }

    /// Checks that the fields fit together; [`crate::preprocess`] calls this.
    pub fn validate(&self) -> Result<(), DataError> {
        let err = |m: String| Err(DataError::Config(m));
        if self.input_shape.contains(&0) {
            return err(format!(
                "input shape {:?} has a zero dimension",
                self.input_shape
            ));
        }
        let c = self.pixel_format.channels();
        if self.channels() != c {
            return err(format!(
                "input shape {:?} ({}) has {} channels, but pixel_format {} needs {c}",
                self.input_shape,
                self.channel_format,
                self.channels(),
                self.pixel_format
            ));
        }
        for (name, values) in [("mean", &self.mean), ("scale", &self.scale)] {
            if values.len() < c {
                return err(format!(
                    "{name} has {} values, but pixel_format {} has {c} channels",
                    values.len(),
                    self.pixel_format
                ));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return err(format!("{name} contains the non-finite value {v}"));
            }
        }
        let [rh, rw] = self.effective_resize_dims();
        let [nh, nw] = self.net_dims();
        if rh == 0 || rw == 0 {
            return err(format!("resize_dims {rh},{rw} has a zero dimension"));
        }
        // TPU-MLIR centre-crops from resize_dims to the network size; a smaller
        // resize_dims would give a negative crop start (numpy then silently
        // returns a wrongly sized array), so it is rejected here.
        if rh < nh || rw < nw {
            return err(format!(
                "resize_dims {rh},{rw} is smaller than the network input {nh},{nw}; it must be \
                 at least as large (the image is centre-cropped to the network size)"
            ));
        }
        Ok(())
    }
}

/// Raw `model_transform` preprocessing flag values, spelled as TPU-MLIR
/// spells them. `None` means the flag was not given.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PreprocessFlags {
    pub resize_dims: Option<String>,
    pub keep_aspect_ratio: bool,
    pub keep_ratio_mode: Option<String>,
    pub mean: Option<String>,
    pub scale: Option<String>,
    pub pixel_format: Option<String>,
    pub channel_format: Option<String>,
    pub pad_value: Option<String>,
    pub pad_type: Option<String>,
}

impl PreprocessFlags {
    /// Sets one flag by its TPU-MLIR name (with or without leading dashes;
    /// kebab-case accepted). `keep_aspect_ratio` takes no value.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), DataError> {
        let key = name.trim_start_matches('-').replace('-', "_");
        let need = |v: Option<&str>| -> Result<Option<String>, DataError> {
            v.map(|s| Some(s.to_string()))
                .ok_or_else(|| DataError::Flag {
                    flag: "preprocess",
                    value: name.to_string(),
                    message: "this flag needs a value".to_string(),
                })
        };
        match key.as_str() {
            "resize_dims" => self.resize_dims = need(value)?,
            "keep_aspect_ratio" => self.keep_aspect_ratio = true,
            "keep_ratio_mode" => self.keep_ratio_mode = need(value)?,
            "mean" => self.mean = need(value)?,
            "scale" => self.scale = need(value)?,
            "pixel_format" => self.pixel_format = need(value)?,
            "channel_format" => self.channel_format = need(value)?,
            "pad_value" => self.pad_value = need(value)?,
            "pad_type" => self.pad_type = need(value)?,
            _ => {
                return Err(DataError::Flag {
                    flag: "preprocess",
                    value: name.to_string(),
                    message: "not a preprocessing flag".to_string(),
                });
            }
        }
        Ok(())
    }
}

fn split_items<'a>(
    flag: &'static str,
    s: &'a str,
    example: &str,
) -> Result<Vec<&'a str>, DataError> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if let Some(i) = items.iter().position(|t| t.is_empty()) {
        return Err(DataError::Flag {
            flag,
            value: s.to_string(),
            message: format!(
                "item {} is empty; expected comma-separated numbers like `{example}`",
                i + 1
            ),
        });
    }
    Ok(items)
}

/// Parses a comma-separated list of numbers such as `127,127,127` or
/// `0.0078125, 0.0078125, 0.0078125` (the `--mean` / `--scale` syntax).
pub fn parse_f32_list(flag: &'static str, s: &str) -> Result<Vec<f32>, DataError> {
    split_items(flag, s, "127,127,127")?
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| DataError::Flag {
                    flag,
                    value: s.to_string(),
                    message: format!("item {} `{t}` is not a finite number", i + 1),
                })
        })
        .collect()
}

/// Parses a comma-separated list of non-negative integers such as `224,224`
/// (the `--resize_dims` syntax).
pub fn parse_usize_list(flag: &'static str, s: &str) -> Result<Vec<usize>, DataError> {
    split_items(flag, s, "224,224")?
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.parse::<usize>().map_err(|_| DataError::Flag {
                flag,
                value: s.to_string(),
                message: format!("item {} `{t}` is not a non-negative integer", i + 1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_reports_the_bad_item() {
        assert_eq!(
            parse_f32_list("mean", "127,127,127").unwrap(),
            vec![127.0; 3]
        );
        assert_eq!(
            parse_f32_list("mean", " -1.5, 2 ").unwrap(),
            vec![-1.5, 2.0]
        );
        assert_eq!(
            parse_usize_list("resize_dims", "256,256").unwrap(),
            vec![256, 256]
        );
        let e = parse_f32_list("mean", "1,,3").unwrap_err().to_string();
        assert!(
            e.contains("--mean `1,,3`") && e.contains("item 2 is empty"),
            "{e}"
        );
        let e = parse_f32_list("scale", "1,x").unwrap_err().to_string();
        assert!(e.contains("item 2 `x` is not a finite number"), "{e}");
        let e = parse_usize_list("resize_dims", "224,-1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("item 2 `-1`"), "{e}");
        assert!(parse_f32_list("mean", "").is_err());
        assert!(parse_f32_list("mean", "nan,1,1").is_err());
    }

    #[test]
    fn from_flags_applies_defaults_and_validates() {
        let mut flags = PreprocessFlags::default();
        flags.set("--resize_dims", Some("256,256")).unwrap();
        flags.set("--pixel_format", Some("rgb")).unwrap();
        flags.set("--keep_aspect_ratio", None).unwrap();
        flags.set("--pad-value", Some("114")).unwrap();
        let cfg = PreprocessConfig::from_flags([1, 3, 224, 224], &flags).unwrap();
        assert_eq!(cfg.resize_dims, Some([256, 256]));
        assert_eq!(cfg.pixel_format, PixelFormat::Rgb);
        assert!(cfg.keep_aspect_ratio);
        assert_eq!(cfg.pad_value, 114);
        assert_eq!(cfg.mean, vec![0.0; 3]);
        assert_eq!(cfg.keep_ratio_mode, KeepRatioMode::Letterbox);

        let mut flags = PreprocessFlags::default();
        flags.set("pixel_format", Some("yuv")).unwrap();
        let e = PreprocessConfig::from_flags([1, 3, 224, 224], &flags).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected one of rgb, bgr, gray, rgba"),
            "{e}"
        );

        let mut flags = PreprocessFlags::default();
        flags.set("pixel_format", Some("gray")).unwrap();
        let e = PreprocessConfig::from_flags([1, 3, 224, 224], &flags).unwrap_err();
        assert!(e.to_string().contains("needs 1"), "{e}");
        // Gray uses only the first of the default three mean values.
        assert!(PreprocessConfig::from_flags([1, 1, 224, 224], &flags).is_ok());

        let mut flags = PreprocessFlags::default();
        flags.set("resize_dims", Some("200,256")).unwrap();
        let e = PreprocessConfig::from_flags([1, 3, 224, 224], &flags).unwrap_err();
        assert!(
            e.to_string().contains("smaller than the network input"),
            "{e}"
        );

        let mut flags = PreprocessFlags::default();
        flags.set("mean", Some("1,2")).unwrap();
        assert!(PreprocessConfig::from_flags([1, 3, 224, 224], &flags).is_err());
        assert!(flags.set("pad_value", None).is_err());
        assert!(flags.set("--bogus", Some("1")).is_err());
        flags.set("pad_value", Some("300")).unwrap();
        flags.set("mean", Some("1,2,3")).unwrap();
        let e = PreprocessConfig::from_flags([1, 3, 224, 224], &flags).unwrap_err();
        assert!(e.to_string().contains("0..=255"), "{e}");
    }

    #[test]
    fn nhwc_dims() {
        let mut cfg = PreprocessConfig::new([2, 300, 200, 3]);
        cfg.channel_format = ChannelFormat::Nhwc;
        assert_eq!(cfg.net_dims(), [300, 200]);
        assert_eq!(cfg.channels(), 3);
        assert_eq!(cfg.batch(), 2);
        cfg.validate().unwrap();
    }
}
