//! `fp_forward`: the float layers before, after and between named ops.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qtune_deploy::Processor;
use qtune_quant::QuantMode;

use crate::deploy::{load_for_quantization, parse_processor};
use crate::{Error, Reporter, Result};

/// What `fp_forward` keeps in float.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct FpForwardSettings {
    /// The model: Top-dialect `.mlir` or `.onnx`.
    pub model: PathBuf,
    /// Target processor (decides `fp_type auto`).
    pub processor: String,
    /// Float type of the listed layers: `auto` (the chip's), F16, F32, BF16.
    pub fp_type: String,
    /// Ops that, with everything before them, stay float (`--fpfwd_inputs`).
    pub inputs: Vec<String>,
    /// Ops that, with everything after them, stay float (`--fpfwd_outputs`).
    pub outputs: Vec<String>,
    /// Blocks `s1,s2:e1,e2`: the ops on paths from a start to an end stay
    /// float (`--fpfwd_blocks`).
    pub blocks: Vec<String>,
}

/// The layers `fp_forward` keeps in float, at `mode`.
#[derive(Debug, Clone, PartialEq)]
pub struct FpForward {
    pub layers: Vec<String>,
    pub mode: QuantMode,
    pub processor: Processor,
}

impl FpForward {
    /// The qtable text, with `time` as its time line (`None`: none).
    pub fn qtable_text(&self, time: Option<&str>) -> String {
        qtune_mixed::fp_forward_table(time, self.processor.name(), self.mode.name(), &self.layers)
    }

    /// Writes the qtable at `path` (atomically).
    pub fn write(&self, path: &Path, time: Option<&str>) -> Result<()> {
        let text = self.qtable_text(time);
        qtune_tensor::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))
            .with_context(|| format!("writing `{}`", path.display()))?;
        Ok(())
    }
}

/// TPU-MLIR's `fp_forward`: the layers before `inputs`, after `outputs` and
/// inside `blocks`, on the ops as model_deploy plans them (BatchNorm folded
/// into its Conv). Names that match no op are reported as warnings.
pub fn fp_forward(settings: &FpForwardSettings, reporter: &dyn Reporter) -> Result<FpForward> {
    let processor = parse_processor(&settings.processor)?;
    let mode = processor
        .profile()
        .float_type(&settings.fp_type)
        .map_err(|e| Error::setting("fp_type", e))?;
    let blocks = settings
        .blocks
        .iter()
        .map(|b| qtune_mixed::parse_block(b))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::setting("fpfwd_blocks", e))?;
    if settings.inputs.is_empty() && settings.outputs.is_empty() && blocks.is_empty() {
        return Err(Error::setting(
            "",
            "give at least one of --fpfwd_inputs, --fpfwd_outputs, --fpfwd_blocks",
        ));
    }
    let loaded = load_for_quantization(&settings.model)?;
    let (layers, warnings) = qtune_mixed::fp_forward_layers(
        loaded.exec.graph(),
        &settings.inputs,
        &settings.outputs,
        &blocks,
    );
    for w in &warnings {
        reporter.warning(w);
    }
    Ok(FpForward {
        layers,
        mode,
        processor,
    })
}
