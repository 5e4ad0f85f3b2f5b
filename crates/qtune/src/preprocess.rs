//! The image preprocessing settings of TPU-MLIR's `model_transform`
//! (its flag texts, validated when a configuration is made for an input),
//! shared by every operation that reads images.

use crate::{Error, Result};
use qtune_data::{PreprocessConfig, PreprocessFlags};
use qtune_ir::mlir::MlirAttr;

/// Image preprocessing as TPU-MLIR's flags spell it; `None` fields take
/// model_transform's defaults. The flags themselves are
/// [`qtune_data::PreprocessFlags`] (read and set its fields through this
/// type: `p.mean = Some("127,127,127".into())`); this type adds what needs
/// the IR (the `top.Input` attributes) and the library's errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preprocess(PreprocessFlags);

impl std::ops::Deref for Preprocess {
    type Target = PreprocessFlags;
    fn deref(&self) -> &PreprocessFlags {
        &self.0
    }
}

impl std::ops::DerefMut for Preprocess {
    fn deref_mut(&mut self) -> &mut PreprocessFlags {
        &mut self.0
    }
}

impl From<PreprocessFlags> for Preprocess {
    fn from(flags: PreprocessFlags) -> Self {
        Preprocess(flags)
    }
}

impl From<Preprocess> for PreprocessFlags {
    fn from(p: Preprocess) -> Self {
        p.0
    }
}

impl Preprocess {
    /// Whether any setting differs from model_transform's defaults.
    pub fn is_given(&self) -> bool {
        *self != Preprocess::default()
    }

    /// Whether `--channel_format nhwc` was given.
    pub fn is_nhwc(&self) -> bool {
        self.channel_format.as_deref().map(str::trim) == Some("nhwc")
    }

    /// The `top.Input` attributes TPU-MLIR's model_transform stores for an
    /// image input, from the resolved configuration. Mean and scale keep
    /// the flag's decimal values (as f64, as TPU-MLIR's Python does).
    pub fn input_attrs(&self, cfg: &PreprocessConfig) -> Result<Vec<(String, MlirAttr)>> {
        let floats = |flag: &str, given: &Option<String>, fallback: &[f32]| -> Result<Vec<f64>> {
            match given {
                Some(s) => s
                    .split(',')
                    .map(|v| {
                        v.trim().parse::<f64>().map_err(|_| {
                            Error::setting(flag, format!("--{flag} `{s}`: `{v}` is not a number"))
                        })
                    })
                    .collect(),
                None => Ok(fallback.iter().map(|&v| f64::from(v)).collect()),
            }
        };
        let dims = cfg.effective_resize_dims();
        let to_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(vec![
            (
                "channel_format".into(),
                MlirAttr::Str(cfg.channel_format.to_string()),
            ),
            (
                "keep_aspect_ratio".into(),
                MlirAttr::Bool(cfg.keep_aspect_ratio),
            ),
            (
                "keep_ratio_mode".into(),
                MlirAttr::Str(cfg.keep_ratio_mode.to_string()),
            ),
            (
                "mean".into(),
                MlirAttr::F64Array(floats("mean", &self.mean, &cfg.mean)?),
            ),
            ("pad_type".into(), MlirAttr::Str(cfg.pad_type.to_string())),
            ("pad_value".into(), MlirAttr::I64(i64::from(cfg.pad_value))),
            (
                "pixel_format".into(),
                MlirAttr::Str(cfg.pixel_format.to_string()),
            ),
            (
                "resize_dims".into(),
                MlirAttr::I64Array(dims.iter().map(|&d| to_i64(d)).collect()),
            ),
            (
                "scale".into(),
                MlirAttr::F64Array(floats("scale", &self.scale, &cfg.scale)?),
            ),
        ])
    }

    /// Rebuilds the flags from `top.Input` attributes of an .mlir, so tools
    /// that read an .mlir preprocess images exactly as model_transform was
    /// told to. Returns `None` when the input carries no preprocessing.
    pub fn from_input_attrs(attrs: &[(String, MlirAttr)]) -> Option<Self> {
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let list = |k: &str| -> Option<String> {
            let v = get(k)?;
            if let Some(a) = v.as_i64_array() {
                return Some(
                    a.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            v.as_f64_vec().map(|a| {
                a.iter()
                    .map(|x| format!("{x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        let text = |k: &str| get(k).and_then(|v| v.as_str().map(str::to_string));
        let mean = list("mean")?;
        let mut p = PreprocessFlags::default();
        p.resize_dims = list("resize_dims");
        p.keep_aspect_ratio = get("keep_aspect_ratio")
            .and_then(MlirAttr::as_bool)
            .unwrap_or(false);
        p.keep_ratio_mode = text("keep_ratio_mode");
        p.mean = Some(mean);
        p.scale = list("scale");
        p.pixel_format = text("pixel_format");
        p.channel_format = text("channel_format");
        p.pad_value = get("pad_value")
            .and_then(MlirAttr::as_i64)
            .map(|v| v.to_string());
        p.pad_type = text("pad_type");
        Some(Preprocess(p))
    }

    /// The validated configuration for a network input of `shape`.
    pub fn config(&self, shape: &[usize]) -> Result<PreprocessConfig> {
        let shape: [usize; 4] = shape.try_into().map_err(|_| Error::Input {
            message: format!("image input must have rank 4, the model's has shape {shape:?}"),
        })?;
        Ok(PreprocessConfig::from_flags(shape, &self.0)?)
    }
}

/// The preprocessing of a one-image-input model: the flags, or for a .mlir
/// made by model_transform the `top.Input` attributes it carries (flags
/// are then an error: the file already says).
pub fn model_preprocess(
    flags: &Preprocess,
    loaded: &crate::model::LoadedModel,
    model: &std::path::Path,
    command: &str,
) -> Result<PreprocessConfig> {
    let g = loaded.exec.graph();
    if g.inputs.len() != 1 {
        crate::bail!(
            "model `{}` has {} inputs; {command} needs one image input",
            model.display(),
            g.inputs.len()
        );
    }
    let input = g.inputs[0];
    let from_file = loaded
        .input_attrs
        .iter()
        .find(|a| a.name == g.value(input).name)
        .and_then(|a| Preprocess::from_input_attrs(&a.attrs));
    let given = *flags != Preprocess::default();
    let pre = match from_file {
        Some(_) if given => crate::bail!(
            "preprocessing flags apply to .onnx models only; `{}` carries its own (top.Input attributes)",
            model.display()
        ),
        Some(p) => p,
        None => flags.clone(),
    };
    Ok(anyhow::Context::with_context(
        pre.config(g.shape_of(input)?.dims()),
        || format!("model `{}`", model.display()),
    )?)
}
