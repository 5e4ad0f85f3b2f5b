//! Quantizing a model before running it (`model_deploy`'s flags), and the
//! calibration-table warnings the tools print. Loading lives in the
//! library ([`qtune::model`]), re-exported here.

use std::path::Path;

use anyhow::Result;

pub use qtune::model::{
    LoadedModel, Naming, OnnxIoNames, canonical_top_graph, executor_of, import_onnx_named, load,
    load_model, load_with, parse_input_shapes, samples_from_arrays,
};

/// How to quantize a model before running it (`model_deploy`'s flags; the
/// examples take them too, to run the fake-quantized model).
#[derive(clap::Args, Debug, Clone)]
pub struct QuantArgs {
    /// INT8, F16, BF16 or F32 (default: INT8 with a calibration table, else F32).
    #[arg(long)]
    pub quantize: Option<String>,
    /// Calibration table (run_calibration's output) for the INT8 layers.
    #[arg(long = "calibration_table", alias = "calibration-table")]
    pub calibration_table: Option<std::path::PathBuf>,
    /// Qtable: layers kept at another precision (`name F16` per line, mode in
    /// any case). Rows naming no op of the model and one-token lines are
    /// skipped with a warning, as TPU-MLIR skips them (see --strict).
    #[arg(long = "quantize_table", alias = "quantize-table")]
    pub quantize_table: Option<std::path::PathBuf>,
    /// Target processor: bm1684x, bm1684, bm1688, bm1690, cv186x, cv183x,
    /// cv182x, cv181x, cv180x.
    #[arg(long, visible_alias = "chip", default_value = "bm1684x")]
    pub processor: String,
    /// INT8 asymmetric: activations use the table's (min, max) with a zero
    /// point instead of the symmetric threshold (TPU-MLIR's --asymmetric).
    #[arg(long)]
    pub asymmetric: bool,
    /// Gemm / fully connected weights per output channel instead of per
    /// tensor (TPU-MLIR's --matmul_perchannel; BM1684X family and cv18xx).
    #[arg(long = "matmul_perchannel", alias = "matmul-perchannel")]
    pub matmul_perchannel: bool,
    /// Float type of the ops the chip keeps in float (auto: the chip's).
    #[arg(long = "fp_type", alias = "fp-type", default_value = "auto")]
    pub fp_type: String,
    /// Qtable lines TPU-MLIR skips (rows naming no op of the model, lines
    /// with one token) are errors (exit 2) instead of one warning line.
    #[arg(long)]
    pub strict: bool,
    /// Weight-only layers (W8F16, W8BF16, W4F16, W4BF16): one scale per
    /// group of N weights along the input (reduction) axis; N must divide
    /// every such layer's K. Omitted: one scale per output channel
    /// (TPU-MLIR's default 0).
    #[arg(long = "q_group_size", alias = "q-group-size")]
    pub q_group_size: Option<usize>,
    /// Weight-only groups are symmetric (zero point 128 / 8) instead of
    /// asymmetric (TPU-MLIR's --q_symmetric; needs --q_group_size).
    #[arg(long = "q_symmetric", alias = "q-symmetric")]
    pub q_symmetric: bool,
}

impl QuantArgs {
    /// Whether any quantization was asked for.
    pub fn requested(&self) -> bool {
        self.quantize.is_some()
            || self.calibration_table.is_some()
            || self.quantize_table.is_some()
            || self.asymmetric
    }

    /// The `--quantize` mode ([`qtune::deploy::parse_quantize_mode`]).
    pub fn mode(&self) -> Result<qtune_quant::QuantMode> {
        Ok(qtune::deploy::parse_quantize_mode(
            self.quantize.as_deref(),
            self.calibration_table.is_some(),
        )?)
    }

    /// `--q_group_size` / `--q_symmetric` ([`qtune::deploy::weight_only`]).
    pub fn weight_only(&self) -> Result<qtune_deploy::WeightOnly> {
        Ok(qtune::deploy::weight_only(
            self.q_group_size,
            self.q_symmetric,
        )?)
    }

    pub fn processor(&self) -> Result<qtune_deploy::Processor> {
        Ok(qtune::deploy::parse_processor(&self.processor)?)
    }

    /// The library's settings of these flags.
    pub fn settings(&self) -> Result<qtune::QuantizeSettings> {
        let mut s = qtune::QuantizeSettings::default();
        s.mode = self.mode()?;
        s.calibration_table = self.calibration_table.clone();
        s.quantize_table = self.quantize_table.clone();
        s.processor = self.processor.clone();
        s.asymmetric = self.asymmetric;
        s.matmul_per_channel = self.matmul_perchannel;
        s.fp_type = self.fp_type.clone();
        s.strict = self.strict;
        s.weight_only = self.weight_only()?;
        Ok(s)
    }

    /// Plans and builds the quantized model of `graph`; warnings go to
    /// stderr.
    pub fn quantize(&self, graph: &qtune_ir::Graph) -> Result<qtune_deploy::QuantizedModel> {
        let settings = self.settings()?;
        Ok(qtune::quantize(graph, &settings, &crate::progress::Stderr)?)
    }
}

/// Reads a calibration table and prints its reader warnings (rows set
/// aside because a number is not finite) on stderr.
pub fn read_calibration_table(path: &Path) -> Result<qtune_quant::CalibrationTable> {
    Ok(qtune::deploy::read_calibration_table(
        path,
        &crate::progress::Stderr,
    )?)
}

/// [`qtune::deploy::load_runnable`] with these flags: the model as it is
/// when they ask for no quantization, else quantized and simulated.
pub fn load_runnable(path: &Path, quant: &QuantArgs) -> Result<LoadedModel> {
    let settings = if quant.requested() {
        Some(quant.settings()?)
    } else {
        None
    };
    Ok(qtune::deploy::load_runnable(
        path,
        settings.as_ref(),
        &crate::progress::Stderr,
    )?)
}
