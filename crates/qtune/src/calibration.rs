//! Calibration as TPU-MLIR's `run_calibration` runs it: optional SmoothQuant
//! (`--sq`) and weight equalization (`--we`) of the float model, the
//! statistics pass and thresholds (with tuning), optional bias correction
//! (`--bc`) and calibration of the corrected model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qtune_calibrate::{
    CalibrationMethod, CalibrationOutcome, CalibrationSettings, CalibrationTable, QuantMode,
    QuantizeTable, SampleLoader, TableHeader, TimeLine,
};
use qtune_data::PreprocessConfig;
use qtune_exec::{Executor, PrepareOptions};
use qtune_ir::mlir::InputAttrs;
use qtune_transforms::{BiasCorrectionSettings, SmoothQuantSettings};

use crate::bias_correction::{self, BcRequest};
use crate::model::{self, LoadedModel, Naming};
use crate::source::{CalibrationSource, Selected};
use crate::weight_transforms::{self, TransformRequest};
use crate::{Error, Preprocess, Reporter, Result};

/// Bias correction settings (`--bc`, spec 3.12).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BiasCorrection {
    /// Convs whose int8 output's mapped cosine is below this are corrected
    /// (`--min_layer_cos`, default 0.99).
    pub min_layer_cos: f64,
    /// The walk stops once the output cosine exceeds this (`--expected_cos`,
    /// default 0.99).
    pub expected_cos: f64,
    /// Samples simulated (`--bc_inference_num`, default 30).
    pub inference_num: usize,
    /// Bytes of cached activations of the trials (`--memory_mb`).
    pub cache_bytes: usize,
    /// Float type of the ops the chip keeps in float (`--fp_type`, `auto`).
    pub fp_type: String,
    /// Continue from the journal an interrupted run left beside the
    /// corrected model (`--resume`); without it an old journal is replaced.
    pub resume: bool,
}

impl Default for BiasCorrection {
    fn default() -> Self {
        BiasCorrection {
            min_layer_cos: 0.99,
            expected_cos: 0.99,
            inference_num: 30,
            cache_bytes: 1024 << 20,
            fp_type: "auto".to_string(),
            resume: false,
        }
    }
}

/// Everything one calibration needs (`run_calibration` without `--search`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CalibrateSettings {
    /// The float model: a Top `.mlir` (its `top.Input` attributes give the
    /// image preprocessing) or an `.onnx` file.
    pub model: PathBuf,
    /// Static shapes for dynamic inputs of an `.onnx` model
    /// (`[[1,3,224,224]]`).
    pub input_shapes: Option<String>,
    /// Image preprocessing of an `.onnx` model (a `.mlir` carries its own:
    /// giving any here is then an error).
    pub preprocess: Preprocess,
    /// The samples.
    pub source: CalibrationSource,
    /// Samples used (0: all).
    pub input_num: usize,
    /// A data list of the tuning samples (`tune_num` becomes its length).
    pub tune_list: Option<PathBuf>,
    /// Threshold method, histogram bins, tuning samples and steps, memory.
    pub calibration: CalibrationSettings,
    /// Target processor (its float mode is the shape-ops qtable's).
    pub processor: String,
    /// The calibration table's path: the transformed models of `sq`, `we`
    /// and `bc` are written next to it (`<table>_we.mlir`, ...). The table
    /// itself is written by [`Calibration::write`].
    pub table_path: PathBuf,
    /// SmoothQuant (`--sq`) with its alpha, scope and scale clipping
    /// (`--sq_alpha`, `--sq_scope`).
    pub smooth_quant: Option<SmoothQuantSettings>,
    /// Weight equalization (`--we`).
    pub weight_equalization: bool,
    /// Bias correction (`--bc`).
    pub bias_correction: Option<BiasCorrection>,
}

impl CalibrateSettings {
    /// Settings with qtune's defaults (`kl`, 5 tuning samples, bm1684x, no
    /// transforms) for `model`, `source` and the table path.
    pub fn new(
        model: impl Into<PathBuf>,
        source: CalibrationSource,
        table_path: impl Into<PathBuf>,
    ) -> Self {
        CalibrateSettings {
            model: model.into(),
            input_shapes: None,
            preprocess: Preprocess::default(),
            source,
            input_num: 0,
            tune_list: None,
            calibration: CalibrationSettings::default(),
            processor: "bm1684x".to_string(),
            table_path: table_path.into(),
            smooth_quant: None,
            weight_equalization: false,
            bias_correction: None,
        }
    }
}

/// The model (TPU-MLIR op names; BatchNorm folded when asked) and loaders of
/// its calibration (and tuning) samples.
pub struct CalibrationInput {
    pub loaded: LoadedModel,
    pub loader: SampleLoader,
    pub tune_loader: Option<SampleLoader>,
    /// `tune_num`, or the length of the tune list.
    pub tune_num: usize,
    /// The selected samples (for the loaders of transformed models).
    pub selection: Selected,
    /// Per graph input, its image preprocessing (image samples only).
    pub configs: Vec<Option<PreprocessConfig>>,
}

/// Refuses preprocessing settings for a `.mlir` model, which carries its own
/// (`top.Input` attributes).
pub fn check_preprocess(model_path: &Path, preprocess: &Preprocess) -> Result<()> {
    let is_mlir = model_path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mlir"));
    if is_mlir && preprocess.is_given() {
        return Err(Error::setting(
            "preprocess",
            format!(
                "preprocessing flags apply to .onnx models only; `{}` carries its own (top.Input attributes)",
                model_path.display()
            ),
        ));
    }
    Ok(())
}

/// Loads the model of `settings` and selects its calibration (and tuning)
/// samples (`model`, `input_shapes`, `preprocess`, `source`, `input_num`,
/// `tune_list` and `calibration.tune_num` are read), BatchNorm folded into
/// Conv when asked.
pub fn calibration_input(
    settings: &CalibrateSettings,
    fold_batchnorm: bool,
) -> Result<CalibrationInput> {
    let model_path = settings.model.as_path();
    let input_shapes = settings.input_shapes.as_deref();
    let preprocess = &settings.preprocess;
    let source = &settings.source;
    let input_num = settings.input_num;
    let tune_list = settings.tune_list.as_deref();
    let tune_num = settings.calibration.tune_num;
    let ext = model_path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_mlir = ext == "mlir";
    check_preprocess(model_path, preprocess)?;
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = fold_batchnorm;
    let loaded = model::load_model(model_path, input_shapes, &prepare, Naming::TopOps)?;
    let graph = loaded.exec.graph();
    let inputs = graph.inputs.len();
    let selection = source.select(input_num, inputs)?;
    let mut configs = Vec::with_capacity(inputs);
    let image_samples = selection.is_images();
    for &id in &graph.inputs {
        let name = &graph.value(id).name;
        let shape = graph.shape_of(id)?.dims().to_vec();
        let pre = if is_mlir {
            loaded
                .input_attrs
                .iter()
                .find(|a| &a.name == name)
                .and_then(|a| Preprocess::from_input_attrs(&a.attrs))
        } else {
            Some(preprocess.clone())
        };
        let cfg = match pre {
            Some(p) if image_samples => Some(p.config(&shape).with_context(|| {
                format!(
                    "model `{}`, input `{name}`: cannot preprocess images for it",
                    model_path.display()
                )
            })?),
            _ => None,
        };
        configs.push(cfg);
    }
    let loader = selection
        .loader(graph, configs.clone())
        .with_context(|| format!("model `{}`", model_path.display()))?;
    let mut tune_num = tune_num;
    let tune_loader = match tune_list {
        Some(list) => {
            let sel = qtune_data::select_data_list(list, 0, inputs)?;
            tune_num = sel.samples.len();
            Some(SampleLoader::new(graph, sel, configs.clone())?)
        }
        None => None,
    };
    Ok(CalibrationInput {
        loaded,
        loader,
        tune_loader,
        tune_num,
        selection,
        configs,
    })
}

/// A finished calibration: the thresholds, and the model they are keyed by.
pub struct Calibration {
    /// Rows (untuned and tuned), warnings, times.
    pub outcome: CalibrationOutcome,
    /// The model the table is keyed by: the input model, or the transformed
    /// model written by `sq`/`we`/`bc` (deploy that one with the table).
    pub model: PathBuf,
    /// That model, loaded (TPU-MLIR op names).
    pub executor: Executor,
    /// Its calibration samples.
    pub loader: SampleLoader,
    /// Tuning samples asked for (the table's `# tune number`).
    pub tune_num: usize,
    /// Before/after figures of the transforms applied, for the report.
    pub transforms: Vec<qtune_report::Transform>,
    /// The processor the shape-ops qtable is written for.
    pub processor: String,
}

/// What a calibration's report says about the run: the files
/// [`Calibration::write`] wrote and how the run was set up.
#[derive(Debug, Clone, Copy)]
pub struct WrittenTables<'a> {
    pub table_path: &'a Path,
    pub qtable_path: &'a Path,
    /// The qtable [`Calibration::write`] returned.
    pub qtable: &'a QuantizeTable,
    /// The time line written (`None`: none).
    pub time: Option<&'a str>,
    /// The `.onnx` model's static input shapes, as calibrated.
    pub input_shapes: Option<&'a str>,
    /// How the report names the samples.
    pub dataset: &'a str,
    /// The run's wall time so far, in seconds.
    pub run_seconds: f64,
}

/// The default path of the shape-ops qtable: `shape_pattern_qtable` in the
/// calibration table's folder when its path has one (TPU-MLIR: when `-o`
/// contains `/`).
pub fn qtable_default_path(table: &Path) -> PathBuf {
    match table.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("shape_pattern_qtable"),
        _ => PathBuf::from("shape_pattern_qtable"),
    }
}

impl Calibration {
    /// Measures and writes the report of this calibration (`--report`,
    /// `--plot`, or the text table): the tables just written
    /// (`table_path`, `qtable_path` holding `qtable`) on the model as
    /// model_deploy plans it, measured on the first sample.
    pub fn report(
        &self,
        out: &crate::report::ReportOutputs,
        written: &WrittenTables<'_>,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        if !out.wanted() {
            return Ok(());
        }
        let outcome = &self.outcome;
        // The transformed models are .mlir files with static shapes.
        let shapes = if self.model.extension().is_some_and(|e| e == "mlir") {
            None
        } else {
            written.input_shapes
        };
        let deploy = crate::report::deploy_graph(&self.model, shapes)?;
        let table = outcome.final_table(&self.header(written.time));
        let float = self.float_mode();
        let qtable_rows: Vec<(String, QuantMode)> = written
            .qtable
            .shape_layers
            .iter()
            .map(|n| (n.clone(), float))
            .collect();
        let mut timings = vec![qtune_report::Timing::new(
            "statistics",
            outcome.statistics_time.as_secs_f64(),
        )];
        if outcome.tuned_rows.is_some() {
            timings.push(qtune_report::Timing::new(
                "tuning",
                outcome.tuning_time.as_secs_f64(),
            ));
        }
        timings.push(qtune_report::Timing::new("run", written.run_seconds));
        let mut counts = vec![
            qtune_report::Entry::new("calibration samples", self.loader.sample_count()),
            qtune_report::Entry::new("calibration batches", outcome.batches),
            qtune_report::Entry::new("method", outcome.method),
            qtune_report::Entry::new("tuning batches", outcome.tune_batches),
            qtune_report::Entry::new("thresholds raised by tuning", outcome.tuned_changes),
            qtune_report::Entry::new("tensors calibrated", outcome.rows().len()),
        ];
        counts.retain(|e| e.value != "0" || e.label == "tensors calibrated");
        crate::report::finish(
            out,
            crate::report::RunFacts {
                title: "run_calibration".into(),
                model: &self.model,
                graph: &deploy,
                processor: &self.processor,
                dataset: written.dataset.to_string(),
                table: Some(&table),
                qtable: &qtable_rows,
                fp_type: "auto",
                quantize: QuantMode::Int8,
                asymmetric: false,
                matmul_per_channel: false,
                samples: crate::report::loader_samples(
                    self.executor.graph(),
                    &self.loader,
                    crate::report::RUN_REPORT_SAMPLES,
                )?,
                method_tables: Vec::new(),
                counts,
                timings,
                outputs: vec![
                    written.table_path.display().to_string(),
                    written.qtable_path.display().to_string(),
                ],
                search: None,
                transforms: self.transforms.clone(),
                notes: Vec::new(),
                prebuilt: None,
                measured: None,
            },
            reporter,
        )
    }

    /// The table's header: this qtune's version, the model, `time`
    /// (`None`: no time line), the tune number.
    pub fn header(&self, time: Option<&str>) -> TableHeader {
        TableHeader {
            version: format!("qtune-{}", env!("CARGO_PKG_VERSION")),
            mlir_file: self.model.display().to_string(),
            time: time.map_or(TimeLine::Omit, |t| TimeLine::Text(t.to_string())),
            tune_number: i64::try_from(self.tune_num).unwrap_or(i64::MAX),
        }
    }

    /// The final calibration table (tuned when tuning ran).
    pub fn table(&self, time: Option<&str>) -> CalibrationTable {
        self.outcome.final_table(&self.header(time))
    }

    /// The float mode of the shape-ops qtable.
    pub fn float_mode(&self) -> QuantMode {
        crate::processor::float_mode(&self.processor).unwrap_or(QuantMode::F16)
    }

    /// The qtable of the shape-computing ops kept in float (TPU-MLIR always
    /// writes it).
    pub fn shape_qtable(&self, time: Option<&str>) -> QuantizeTable {
        QuantizeTable {
            time: time.map(str::to_string),
            sample_number: self.outcome.batches,
            chip: self.processor.clone(),
            shape_layers: qtune_calibrate::shape_layers(self.executor.graph()),
            shape_mode: self.float_mode(),
            pattern_mode: self.float_mode(),
            ..QuantizeTable::default()
        }
    }

    /// Writes the shape-ops qtable at `qtable_path`, then the calibration
    /// table at `table_path` (`<table>.1` first, as TPU-MLIR does), both
    /// atomically. Returns the qtable written.
    pub fn write(
        &self,
        table_path: &Path,
        qtable_path: &Path,
        time: Option<&str>,
    ) -> Result<QuantizeTable> {
        let qtable = self.shape_qtable(time);
        qtable.write(qtable_path)?;
        self.outcome.write_tables(&self.header(time), table_path)?;
        Ok(qtable)
    }
}

/// Calibrates a model: `--sq`, `--we`, the statistics and thresholds (with
/// tuning), `--bc` and recalibration, in TPU-MLIR's order. Console lines
/// (the transforms' summaries) and progress go to `reporter`; the logs
/// `SmoothQuant`, `Weight_Equalization` and `Bias_Correction` are written
/// to the current directory, the transformed models next to
/// `settings.table_path`. Run it inside [`crate::with_threads`] to choose
/// the thread count (results do not depend on it).
pub fn calibrate(settings: &CalibrateSettings, reporter: &dyn Reporter) -> Result<Calibration> {
    crate::processor::check_processor(&settings.processor)?;
    let model_path = &settings.model;
    let sq = settings.smooth_quant.is_some();
    let we = settings.weight_equalization;
    let bc = settings.bias_correction.is_some();
    // --sq, --we and --bc work on the model TPU-MLIR deploys: BatchNorm folded.
    let CalibrationInput {
        loaded,
        loader,
        tune_loader,
        tune_num,
        selection,
        configs,
    } = calibration_input(settings, we || sq || bc)?;
    let exec = loaded.exec;
    // --bc reloads the corrected model on the same samples.
    let bc_inputs = bc.then(|| (selection.clone(), configs.clone()));
    let mut calibration = settings.calibration.clone();
    calibration.tune_num = tune_num;

    let request = TransformRequest {
        we,
        sq: settings.smooth_quant.clone(),
        model: model_path,
        calibration_table: &settings.table_path,
        tune_list: settings.tune_list.as_deref(),
        input_attrs: &loaded.input_attrs,
    };
    let transformed =
        weight_transforms::apply(&request, &exec, &loader, selection, configs, reporter)?;
    let mut transforms = Vec::new();
    // With --sq/--we, calibration runs on the transformed model.
    let (exec, loader, tune_loader, model_path) = match transformed {
        Some(t) => {
            transforms.extend(t.transforms);
            (t.exec, t.loader, t.tune_loader, t.model)
        }
        None => (exec, loader, tune_loader, model_path.clone()),
    };
    let outcome =
        qtune_calibrate::calibrate(&exec, &loader, tune_loader.as_ref(), &calibration, reporter)
            .with_context(|| format!("calibrating `{}`", model_path.display()))?;
    // --bc: correct the biases with this table, then calibrate the
    // corrected model (TPU-MLIR's order); that table is the result.
    let (exec, loader, model_path, outcome) = match (bc_inputs, &settings.bias_correction) {
        (Some((selection, configs)), Some(bc)) => {
            let req = bias_correction_request(settings, bc, &loaded.input_attrs);
            // Only the rows matter to the int8 model; the header is not written.
            let table = outcome.final_table(&TableHeader {
                version: String::new(),
                mlir_file: model_path.display().to_string(),
                time: TimeLine::Omit,
                tune_number: 0,
            });
            let mut c = bias_correction::apply(&req, &exec, &table, selection, configs, reporter)?;
            transforms.append(&mut c.transforms);
            let outcome = qtune_calibrate::calibrate(
                &c.exec,
                &c.loader,
                c.tune_loader.as_ref(),
                &calibration,
                reporter,
            )
            .with_context(|| format!("calibrating `{}`", c.model.display()))?;
            (c.exec, c.loader, c.model, outcome)
        }
        _ => (exec, loader, model_path, outcome),
    };
    Ok(Calibration {
        outcome,
        model: model_path,
        executor: exec,
        loader,
        tune_num,
        transforms,
        processor: settings.processor.clone(),
    })
}

/// The bias-correction request of `settings`.
pub fn bias_correction_request<'a>(
    settings: &'a CalibrateSettings,
    bc: &'a BiasCorrection,
    input_attrs: &'a [InputAttrs],
) -> BcRequest<'a> {
    let mut s = BiasCorrectionSettings::default();
    s.min_layer_cos = bc.min_layer_cos;
    s.expected_cos = bc.expected_cos;
    s.cache_budget = bc.cache_bytes;
    BcRequest {
        input_model: &settings.model,
        calibration_table: &settings.table_path,
        sq: settings.smooth_quant.is_some(),
        we: settings.weight_equalization,
        processor: &settings.processor,
        fp_type: &bc.fp_type,
        bc_inference_num: bc.inference_num,
        settings: s,
        source: &settings.source,
        tune_list: settings.tune_list.as_deref(),
        input_attrs,
        resume: bc.resume,
    }
}

/// Parses a `--cali_method` name (also `use_<method>`).
pub fn parse_method(name: &str) -> Result<CalibrationMethod> {
    CalibrationMethod::parse(name).ok_or_else(|| {
        Error::setting(
            "cali_method",
            format!(
                "--cali_method `{name}`: expected kl, mse, max, percentile9999, aciq_gauss or aciq_laplace (or use_<method>)"
            ),
        )
    })
}

/// `str(datetime.now())` in UTC: `YYYY-MM-DD HH:MM:SS.ffffff`, the time
/// line TPU-MLIR writes in tables and qtables.
pub fn python_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_line_looks_like_python() {
        let t = python_now();
        assert_eq!(t.len(), "2026-01-01 00:00:00.000000".len(), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }

    #[test]
    fn shape_qtable_default_path_follows_the_table() {
        assert_eq!(
            qtable_default_path(Path::new("out/cali")),
            PathBuf::from("out/shape_pattern_qtable")
        );
        assert_eq!(
            qtable_default_path(Path::new("cali")),
            PathBuf::from("shape_pattern_qtable")
        );
    }
}
