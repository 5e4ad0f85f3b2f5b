//! `model_deploy` / `qtune deploy`: quantizes a model per processor profile,
//! calibration table and qtable, simulates it (fake quantization on the
//! executor), checks it against a reference, and writes it as a QDQ ONNX
//! model. The work is the library's (`qtune::model_deploy`); this is flags
//! to settings and one call.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::model::QuantArgs;

/// Quantizes a model and writes it as a QDQ ONNX model (TPU-MLIR's
/// `model_deploy`; a `.bmodel` needs TPU-MLIR's backend).
#[derive(clap::Args)]
pub struct Args {
    /// The model: Top-dialect .mlir (model_transform's output) or .onnx.
    #[arg(long)]
    pub mlir: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Output model: `.onnx` (QDQ ONNX for ONNX Runtime, TensorRT, OpenVINO),
    /// with the source ONNX model's input and output names.
    #[arg(long)]
    pub model: PathBuf,
    /// Input arrays (npz keyed by input name, e.g. model_transform's
    /// `<name>_in_f32.npz`) to run the quantized model on. Several samples
    /// stacked on axis 0 run one by one and their outputs are written
    /// stacked (a comparison with --test_reference takes one sample).
    #[arg(long = "test_input", alias = "test-input")]
    pub test_input: Option<PathBuf>,
    /// Reference arrays (npz keyed by op name, e.g. model_transform's
    /// `--test_result`) to compare the quantized outputs with.
    #[arg(long = "test_reference", alias = "test-reference")]
    pub test_reference: Option<PathBuf>,
    /// Minimum similarity `cos,euclid` (default by --quantize: INT8
    /// 0.90,0.80; F16/BF16 0.99,0.90; F32 0.99,0.99).
    #[arg(long, requires = "test_reference")]
    pub tolerance: Option<String>,
    /// Compare (and write) every tensor, not only the model outputs.
    #[arg(long = "compare_all", alias = "compare-all", requires = "test_input")]
    pub compare_all: bool,
    /// Comma-separated tensor names not to compare.
    #[arg(long, requires = "test_reference")]
    pub excepts: Option<String>,
    #[command(flatten)]
    pub weights: WeightMethodArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No summary on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub report: crate::flags::ReportFlags,
}

/// How the weight-only layers' codes are chosen (qtune's addition: the
/// codes, scales and zero points keep TPU-MLIR's layout, which the chip's
/// A16MatMul and ONNX Runtime run unchanged).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WeightMethodArgs {
    /// Weight-only codes: `rtn` (TPU-MLIR's rule: each group's min / max,
    /// round to nearest), `clip` (per group, the shrink of the range, 1.00
    /// to 0.50, that reconstructs the group's weights best; no data),
    /// `gptq` (GPTQ, Frantar et al. 2022: column-by-column rounding with
    /// error compensation from the layer inputs' Hessian over
    /// --calibration_data, min / max grids), `gptq_clip` (GPTQ on the clip
    /// search's grids). Needs weight-only layers (--quantize W8F16, W8BF16,
    /// W4F16, W4BF16 or qtable rows).
    #[arg(long = "q_method", alias = "q-method", default_value = "rtn")]
    pub q_method: String,
    /// GPTQ: quantize the columns in order of decreasing Hessian diagonal
    /// (act-order; the group grids are then fixed from the original weights,
    /// as the export's groups are consecutive columns).
    #[arg(long = "q_act_order", alias = "q-act-order")]
    pub q_act_order: bool,
    /// GPTQ: folder of calibration samples (npz keyed by input name, npy, or
    /// images with the .mlir's preprocessing), as run_calibration's
    /// --dataset.
    #[arg(long = "calibration_data", alias = "calibration-data")]
    pub calibration_data: Option<PathBuf>,
    /// GPTQ: number of calibration samples (default: all).
    #[arg(long = "calibration_num", alias = "calibration-num")]
    pub calibration_num: Option<usize>,
    /// GPTQ: a graph input whose zeros mark padding rows of the layer inputs
    /// (e.g. `attention_mask` of a [batch, sequence] tokenizer input), left
    /// out of the Hessians.
    #[arg(long = "calibration_mask_input", alias = "calibration-mask-input")]
    pub calibration_mask_input: Option<String>,
    /// GPTQ: sequential form (Frantar et al.): each layer's Hessian comes
    /// from the model whose earlier weight-only layers are already
    /// quantized (one pass over the samples per distinct layer input)
    /// instead of from the float model.
    #[arg(long = "q_sequential", alias = "q-sequential")]
    pub q_sequential: bool,
    /// GPTQ: dampening added to the Hessian's diagonal, as a fraction of its
    /// mean (default 0.01, as in the paper); larger values trust the
    /// calibration inputs' correlations less.
    #[arg(long = "q_damp", alias = "q-damp")]
    pub q_damp: Option<f64>,
    /// GPTQ with --q_sequential: after each layer is quantized its bias
    /// absorbs the mean output error over the calibration rows (the biases
    /// stay in the float type; the following layers see the corrected
    /// outputs).
    #[arg(long = "q_bias_correction", alias = "q-bias-correction")]
    pub q_bias_correction: bool,
    /// GPTQ with --q_sequential: before it is quantized, each layer's
    /// weight is refit by least squares so that, fed the inputs of the
    /// model whose earlier layers are quantized, it gives the float
    /// model's outputs (GPTAQ's asymmetric calibration, Li et al. 2025);
    /// GPTQ then quantizes the refit weight. One more float pass per
    /// stage.
    #[arg(long = "q_float_target", alias = "q-float-target")]
    pub q_float_target: bool,
    /// --q_float_target: the least-squares fit's dampening towards the
    /// original weight, as a fraction of the mean of the Hessian's
    /// diagonal (default 1).
    #[arg(long = "q_target_damp", alias = "q-target-damp")]
    pub q_target_damp: Option<f64>,
    /// AWQ (Lin et al. 2023) before --q_method: per input channel of each
    /// weight-only layer a scale `mean|x|^alpha` (alpha searched per layer
    /// input on 0, 0.05, ..., 1 for the least output error over
    /// --calibration_data), folded exactly into what produces the input (a
    /// LayerNorm's gamma / beta, the output channels of a projection
    /// reached through Reshape / Transpose / attention's P V); layers
    /// without such a fold stay unscaled. The graph keeps its ops.
    #[arg(long = "q_awq", alias = "q-awq")]
    pub q_awq: bool,
    /// AWQ's clip search for --q_method clip / gptq_clip: each group's
    /// shrink of the range (1.00 to 0.50 by 0.025) minimises its output
    /// error over --calibration_data (`d^T H d` on the group's block of the
    /// input Hessian) instead of its weight error.
    #[arg(long = "q_awq_clip", alias = "q-awq-clip")]
    pub q_awq_clip: bool,
}

impl WeightMethodArgs {
    /// Sets the weight-only method, AWQ and the calibration of `settings`
    /// from these flags; flags that do not apply are refused (by
    /// [`qtune::deploy::check_weight_method`], and here those that only
    /// refine `--calibration_data`).
    fn apply(&self, settings: &mut qtune::QuantizeSettings) -> Result<()> {
        let method = qtune::deploy::parse_weight_method(&self.q_method)?;
        settings.weight_only.method = method;
        settings.weight_only.act_order = self.q_act_order;
        settings.weight_only.damp_ppm = match self.q_damp {
            Some(d) => qtune::deploy::damp_ppm(d)?,
            None => 0,
        };
        settings.weight_only.clip_by_output = self.q_awq_clip;
        settings.awq = self.q_awq;
        if self.calibration_data.is_none() {
            let refine = [
                (self.calibration_num.is_some(), "--calibration_num"),
                (
                    self.calibration_mask_input.is_some(),
                    "--calibration_mask_input",
                ),
                (self.q_sequential, "--q_sequential"),
                (self.q_bias_correction, "--q_bias_correction"),
                (self.q_float_target, "--q_float_target"),
            ];
            if let Some((_, flag)) = refine.iter().find(|(given, _)| *given) {
                // --calibration_num / --calibration_mask_input also refine
                // AWQ's samples; --q_sequential, --q_bias_correction and
                // --q_float_target are GPTQ's only.
                let awq_too = flag.starts_with("--calibration");
                if method.needs_calibration() || (awq_too && (self.q_awq || self.q_awq_clip)) {
                    bail!("{flag}: needs --calibration_data DIR");
                }
                bail!(
                    "{flag}: applies to --q_method gptq / gptq_clip{} only (--q_method is {})",
                    if awq_too {
                        " or --q_awq / --q_awq_clip"
                    } else {
                        ""
                    },
                    method.name()
                );
            }
        }
        if self.q_target_damp.is_some() && !self.q_float_target {
            bail!("--q_target_damp: applies to --q_float_target only");
        }
        if self.calibration_num == Some(0) {
            bail!("--calibration_num 0: expected a positive count; omit it for all samples");
        }
        settings.weight_calibration = self.calibration_data.as_ref().map(|dir| {
            let mut c =
                qtune::WeightCalibration::new(qtune::CalibrationSource::Dataset(dir.clone()));
            c.num = self.calibration_num.unwrap_or(0);
            c.mask_input = self.calibration_mask_input.clone();
            c.sequential = self.q_sequential;
            c.bias_correction = self.q_bias_correction;
            c.float_target = self
                .q_float_target
                .then(|| self.q_target_damp.unwrap_or(1.0));
            c
        });
        qtune::deploy::check_weight_method(settings)?;
        Ok(())
    }
}

/// `model_deploy`: the same flags under TPU-MLIR's tool name.
#[derive(clap::Parser)]
#[command(name = "model_deploy", version, about = "Quantizes a model and writes a QDQ ONNX model (qtune's model_deploy).", long_about = None)]
pub struct ToolArgs {
    #[command(flatten)]
    pub args: Args,
}

impl Args {
    /// The library's settings of this model_deploy run.
    pub fn settings(&self) -> Result<qtune::ModelDeploy> {
        let mut settings = self.quant.settings()?;
        settings.mode = self.quant.mode()?;
        self.weights.apply(&mut settings)?;
        let mut d = qtune::ModelDeploy::new(&self.mlir, settings, &self.model);
        d.test_input = self.test_input.clone();
        d.test_reference = self.test_reference.clone();
        d.tolerance = self.tolerance.clone();
        d.compare_all = self.compare_all;
        d.excepts = self
            .excepts
            .as_deref()
            .map(|s| s.split(',').map(|e| e.trim().to_string()).collect())
            .unwrap_or_default();
        d.report = self.report.outputs(self.quiet);
        Ok(d)
    }
}

pub fn run(args: Args) -> Result<()> {
    let settings = args.settings()?;
    let bar = crate::progress::Bar::new(args.quiet);
    qtune::with_threads(args.threads, || qtune::model_deploy(&settings, &bar))?;
    Ok(())
}
