//! The report of a run: `--report FILE.html`, `--plot FILE.svg|png` and the
//! per-layer text table at the end of a command. The measuring is
//! `qtune_mixed::report::gather`; the writing is `qtune_report`'s; this
//! joins a run's facts to the measures and writes the files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use qtune_deploy::Processor;
use qtune_exec::PrepareOptions;
use qtune_ir::Graph;
use qtune_mixed::report::{GatherRequest, Gathered, gather};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_report::{Entry, Report, Timing};
use qtune_tensor::Tensor;

use crate::model::{self, Naming};
use crate::{Error, Reporter, Result};

/// What a run writes about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportOutputs {
    /// The self-contained HTML report (`--report`).
    pub html: Option<PathBuf>,
    /// The per-layer chart alone, `.svg` or `.png` (`--plot`).
    pub plot: Option<PathBuf>,
    /// Without `html`: the per-layer similarity as a text table, given to
    /// the reporter's lines (the CLI's default unless `--quiet`).
    pub text_table: bool,
    /// The command line shown in the report's header.
    pub command_line: String,
}

impl ReportOutputs {
    /// No report, chart or table.
    pub fn none() -> Self {
        ReportOutputs::default()
    }

    /// Whether the run measures anything for a report, chart or table.
    pub fn wanted(&self) -> bool {
        self.html.is_some() || self.plot.is_some() || self.text_table
    }

    /// Checks the output paths before any work.
    pub fn check(&self) -> Result<()> {
        if let Some(p) = &self.plot {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if ext != "svg" && ext != "png" {
                return Err(Error::setting(
                    "plot",
                    format!(
                        "--plot {}: the chart is written as SVG or PNG; name the file .svg or .png",
                        p.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Samples the per-layer similarities and histograms of a run's report are
/// measured on (the first of the run's samples), as TPU-MLIR's visual tool
/// compares one input: enough to rank layers, and the report stays a small
/// part of the run (each sample costs a float run and two runs of the
/// quantized model). `qtune report --input_num N` measures on more.
pub const RUN_REPORT_SAMPLES: usize = 1;

/// What a command knows of its run, for the report.
pub struct RunFacts<'a> {
    pub title: String,
    pub model: &'a Path,
    /// The model as the tables name it (BatchNorm folded).
    pub graph: &'a Graph,
    pub processor: &'a str,
    pub dataset: String,
    pub table: Option<&'a CalibrationTable>,
    pub qtable: &'a [(String, QuantMode)],
    pub fp_type: &'a str,
    pub quantize: QuantMode,
    pub asymmetric: bool,
    pub matmul_per_channel: bool,
    pub samples: Vec<Vec<(String, Tensor)>>,
    pub method_tables: Vec<(String, &'a CalibrationTable)>,
    pub counts: Vec<Entry>,
    pub timings: Vec<Timing>,
    pub outputs: Vec<String>,
    pub search: Option<qtune_report::Search>,
    pub transforms: Vec<qtune_report::Transform>,
    pub notes: Vec<String>,
    /// The quantized model of `graph`, when the command built it already.
    pub prebuilt: Option<qtune_mixed::report::Prebuilt<'a>>,
    /// The measures, when the command took them beside its own runs
    /// (`samples` is then empty).
    pub measured: Option<Gathered>,
}

/// Measures, then writes the report and chart, or prints the text table.
pub fn finish(out: &ReportOutputs, facts: RunFacts, reporter: &dyn Reporter) -> Result<()> {
    if !out.wanted() {
        return Ok(());
    }
    let start = Instant::now();
    let mut notes = facts.notes;
    let mut facts_samples = facts.samples;
    if out.html.is_none() && out.plot.is_none() {
        // The text table alone: one sample keeps it a small part of any run.
        facts_samples.truncate(RUN_REPORT_SAMPLES);
    }
    let processor = Processor::parse(facts.processor);
    let measured_by_command = facts.measured.is_some();
    let (gathered, samples) = match (facts.measured, processor) {
        (Some(g), _) => {
            let n = g.samples;
            (Some(g), n)
        }
        (None, Some(p)) => {
            let fp_type = p
                .profile()
                .float_type(facts.fp_type)
                .map_err(|e| Error::setting("fp_type", e))?;
            let g = gather(
                &GatherRequest {
                    graph: facts.graph,
                    processor: p,
                    quantize: facts.quantize,
                    table: facts.table,
                    qtable: facts.qtable,
                    fp_type,
                    asymmetric: facts.asymmetric,
                    matmul_per_channel: facts.matmul_per_channel,
                    method_tables: facts.method_tables,
                    histograms: out.html.is_some(),
                    prebuilt: facts.prebuilt,
                },
                &facts_samples,
            )
            .context("measuring the report")?;
            (Some(g), facts_samples.len())
        }
        (None, None) => {
            notes.push(format!(
                "qtune does not simulate processor {}: no per-layer similarity",
                facts.processor
            ));
            (None, 0)
        }
    };
    if samples == 0 && processor.is_some() {
        notes.push("no samples to run: the per-layer similarity and histograms are not measured (model_deploy measures them on --test_input)".into());
    }
    // Measures taken beside the command's own runs were timed there.
    let extra = gathered.as_ref().map_or(0.0, |g| g.extra_seconds);
    let own = if measured_by_command { extra } else { 0.0 };
    if let Some(g) = &gathered
        && g.float_from_reference > 0
    {
        notes.push(format!(
            "the float tensors of {} sample(s) are the reference arrays the run compared with (--test_reference), not a float run of qtune's",
            g.float_from_reference
        ));
    }
    let mut timings = facts.timings;
    timings.push(Timing::new("report", own + start.elapsed().as_secs_f64()));
    let mut counts = facts.counts;
    counts.push(Entry::new("layers (ops)", facts.graph.node_count()));
    counts.push(Entry::new("report samples", samples));
    let g = gathered.unwrap_or_default();
    let report = Report {
        header: qtune_report::Header {
            title: facts.title,
            command_line: out.command_line.clone(),
            model: facts.model.display().to_string(),
            processor: facts.processor.to_string(),
            dataset: facts.dataset,
            counts,
            versions: vec![Entry::new("qtune", env!("CARGO_PKG_VERSION"))],
            timings,
            outputs: facts.outputs,
        },
        layers: g.layers,
        similarity_samples: g.samples,
        histograms: g.histograms,
        histogram_source: g.histogram_source,
        weights: g.weights,
        search: facts.search,
        transforms: facts.transforms,
        notes,
    };
    write_outputs(out, &report, reporter)
}

/// Writes the report and the chart, or gives the text table to the
/// reporter's lines; the files written are said as notes.
pub fn write_outputs(out: &ReportOutputs, report: &Report, reporter: &dyn Reporter) -> Result<()> {
    if let Some(p) = &out.plot {
        let png = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if png {
            qtune_report::svg::write_layer_png(report, p)?;
        } else {
            qtune_report::svg::write_layer_svg(report, p)?;
        }
        reporter.note(&format!("wrote the per-layer chart {}", p.display()));
    }
    match &out.html {
        Some(p) => {
            qtune_report::html::write_html(report, p)?;
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            reporter.note(&format!(
                "wrote the report {} ({} KiB)",
                p.display(),
                size.div_ceil(1024)
            ));
        }
        None if out.text_table => {
            for line in qtune_report::text::layer_table(report).lines() {
                reporter.line(line);
            }
        }
        None => {}
    }
    Ok(())
}

/// The first `n` batches of `loader` as graph inputs by name.
pub fn loader_samples(
    graph: &Graph,
    loader: &qtune_calibrate::SampleLoader,
    n: usize,
) -> Result<Vec<Vec<(String, Tensor)>>> {
    (0..n.min(loader.batch_count()))
        .map(|i| {
            Ok(loader
                .load(i)?
                .into_iter()
                .map(|(id, t)| (graph.value(id).name.clone(), t))
                .collect())
        })
        .collect()
}

/// The rows of the qtable at `path` that name an op of `graph`, as the
/// deployment reads them (`qtune_deploy::match_qtable`): rows naming no op
/// and lines TPU-MLIR skips are left out, with one warning line to `warn`
/// when given (a command that quantized already warned); modes qtune cannot deploy
/// are refused.
pub fn qtable_rows(
    graph: &Graph,
    path: &Path,
    warn: Option<&dyn Reporter>,
) -> Result<Vec<(String, QuantMode)>> {
    let file = qtune_quant::read_qtable(path)?;
    let matched = qtune_deploy::match_qtable(graph, &file);
    if let Some(r) = warn
        && let Some(summary) = matched.skipped_summary(path)
    {
        r.warning(&format!("warning: {summary} (skipped)"));
    }
    matched.check_modes(path)?;
    Ok(matched.pairs())
}

/// The model with BatchNorm folded and TPU-MLIR op names: what the tables
/// key and the deployed model is planned from.
pub fn deploy_graph(model: &Path, input_shapes: Option<&str>) -> Result<Graph> {
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    Ok(
        model::load_model(model, input_shapes, &prepare, Naming::TopOps)?
            .exec
            .graph()
            .clone(),
    )
}

/// A search's `(float layers, cos)` trajectory; the first point is all-int8.
pub fn trajectory(
    points: &[(usize, f64)],
    label: impl Fn(usize) -> String,
) -> Vec<qtune_report::TrajectoryPoint> {
    points
        .iter()
        .map(|&(k, cos)| qtune_report::TrajectoryPoint {
            float_layers: k,
            cos,
            label: if k == 0 { "all int8".into() } else { label(k) },
        })
        .collect()
}

/// `--data_list` or else `--dataset`, for the report header.
pub fn dataset_label(data_list: Option<&PathBuf>, dataset: Option<&PathBuf>) -> String {
    data_list
        .or(dataset)
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A search's figures for the report.
pub fn search_of_layers(
    kind: &str,
    expected_cos: f64,
    methods: &[String],
    outcome: &qtune_mixed::LayerSearchOutcome,
    what: &str,
) -> qtune_report::Search {
    qtune_report::Search {
        kind: kind.into(),
        scale: "TPU-MLIR's mapped scale 0.5 + 0.5 cos; a loss is 1 minus it".into(),
        expected_cos: Some(expected_cos),
        methods: methods.to_vec(),
        trajectory: trajectory(&outcome.trajectory, |k| {
            format!("{k} most sensitive in float")
        }),
        layers: outcome
            .results
            .iter()
            .map(|r| qtune_report::SearchLayer {
                name: r.name.clone(),
                op_type: r.top_type.clone(),
                losses: r.losses.clone(),
                chosen_method: Some(r.method.clone()),
                threshold: Some(r.threshold),
            })
            .collect(),
        layer_loss: what.into(),
        float_layers: outcome.float_layers.clone(),
        all_int8_cos: Some(outcome.all_int8_cos),
        final_cos: Some(outcome.mix_cos),
    }
}

/// A report built afterwards (`qtune report`): a model quantized with
/// existing tables, measured on samples.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TablesReport {
    /// The float model (`.mlir` or `.onnx`).
    pub model: PathBuf,
    /// The calibration table.
    pub calibration_table: PathBuf,
    /// A qtable of layers kept in float.
    pub quantize_table: Option<PathBuf>,
    /// The samples, chosen as run_calibration chooses them.
    pub source: crate::CalibrationSource,
    /// Samples measured (at least 1).
    pub input_num: usize,
    pub processor: String,
    /// Float type of the layers kept in float (`auto`: the chip's).
    pub fp_type: String,
    /// Static shapes for dynamic inputs of an `.onnx` model.
    pub input_shapes: Option<String>,
    /// Image preprocessing of an `.onnx` model.
    pub preprocess: crate::Preprocess,
    /// The report (and chart) written.
    pub outputs: ReportOutputs,
}

impl TablesReport {
    pub fn new(
        model: impl Into<PathBuf>,
        calibration_table: impl Into<PathBuf>,
        source: crate::CalibrationSource,
        outputs: ReportOutputs,
    ) -> Self {
        TablesReport {
            model: model.into(),
            calibration_table: calibration_table.into(),
            quantize_table: None,
            source,
            input_num: 4,
            processor: "bm1684x".to_string(),
            fp_type: "auto".to_string(),
            input_shapes: None,
            preprocess: crate::Preprocess::default(),
            outputs,
        }
    }
}

/// Measures and writes the report of `r.model` quantized with its tables
/// on its first `input_num` samples.
pub fn report_of_tables(r: &TablesReport, reporter: &dyn Reporter) -> Result<()> {
    let start = Instant::now();
    r.outputs.check()?;
    if r.input_num == 0 {
        return Err(Error::setting(
            "input_num",
            "--input_num must be at least 1",
        ));
    }
    let mut settings = crate::CalibrateSettings::new(r.model.clone(), r.source.clone(), "");
    settings.input_shapes = r.input_shapes.clone();
    settings.preprocess = r.preprocess.clone();
    settings.input_num = r.input_num;
    settings.calibration.tune_num = 0;
    let cal = crate::calibration_input(&settings, false)?;
    let samples = loader_samples(cal.loaded.exec.graph(), &cal.loader, r.input_num)?;
    let graph = deploy_graph(&r.model, r.input_shapes.as_deref())?;
    let table = CalibrationTable::read(&r.calibration_table)?;
    let qtable = match &r.quantize_table {
        Some(p) => qtable_rows(&graph, p, Some(reporter))?,
        None => Vec::new(),
    };
    let load_time = start.elapsed().as_secs_f64();
    let outputs = r
        .outputs
        .html
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    finish(
        &r.outputs,
        RunFacts {
            title: "qtune report".into(),
            model: &r.model,
            graph: &graph,
            processor: &r.processor,
            dataset: r.source.label(),
            table: Some(&table),
            qtable: &qtable,
            fp_type: &r.fp_type,
            quantize: QuantMode::Int8,
            asymmetric: false,
            matmul_per_channel: false,
            samples,
            method_tables: Vec::new(),
            counts: vec![Entry::new(
                "calibration table",
                r.calibration_table.display(),
            )],
            timings: vec![Timing::new("load", load_time)],
            outputs,
            search: None,
            transforms: Vec::new(),
            notes: Vec::new(),
            prebuilt: None,
            measured: None,
        },
        reporter,
    )
}
