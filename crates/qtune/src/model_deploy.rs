//! `model_deploy` as one call: quantize a model ([`crate::deploy_observed`]),
//! run the quantized model on test arrays and check it against reference
//! arrays, write the QDQ ONNX model, and the report of the run, measured
//! beside the runs it makes anyway.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use qtune_deploy::Processor;
use qtune_exec::{NoHook, Parallelism, RunOptions};
use qtune_mixed::report::{EarlyHistograms, GatherRequest, Gathered, Measurer, Prebuilt};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::compare::Tolerance;
use qtune_tensor::{Tensor, read_npz, write_npz};

use crate::deploy::{Deployment, QuantizeSettings, default_tolerance};
use crate::report::{self, ReportOutputs, RunFacts};
use crate::{Error, Reporter, Result};

/// Named arrays, as an npz file holds them.
type Arrays = Vec<(String, Tensor)>;

/// Everything one `model_deploy` run needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModelDeploy {
    /// The float model: Top `.mlir` or `.onnx` (`--mlir`).
    pub input: PathBuf,
    /// How it is quantized.
    pub settings: QuantizeSettings,
    /// The QDQ ONNX model written (`--model`).
    pub output: PathBuf,
    /// Input arrays to run the quantized model on (`--test_input`); its
    /// outputs go to `<output stem>_tpu_outputs.npz`. Several samples
    /// stacked on axis 0 run one by one.
    pub test_input: Option<PathBuf>,
    /// Reference arrays the outputs must match (`--test_reference`) before
    /// the model is written.
    pub test_reference: Option<PathBuf>,
    /// Minimum similarity `cos,euclid` (`None`: by the quantize mode).
    pub tolerance: Option<String>,
    /// Compare (and write) every tensor, not only the model outputs.
    pub compare_all: bool,
    /// Tensor names not compared.
    pub excepts: Vec<String>,
    /// The report of the run.
    pub report: ReportOutputs,
}

impl ModelDeploy {
    pub fn new(
        input: impl Into<PathBuf>,
        settings: QuantizeSettings,
        output: impl Into<PathBuf>,
    ) -> Self {
        ModelDeploy {
            input: input.into(),
            settings,
            output: output.into(),
            test_input: None,
            test_reference: None,
            tolerance: None,
            compare_all: false,
            excepts: Vec::new(),
            report: ReportOutputs::none(),
        }
    }
}

/// What a `model_deploy` run did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Deployed {
    /// Weight-only layers written as com.microsoft MatMulNBits (4-bit).
    pub packed_nbits: usize,
    /// The test outputs written (with a test input).
    pub outputs_npz: Option<PathBuf>,
    /// Tensors compared with the reference, all within the tolerance (a
    /// check that fails is an error).
    pub compared: Option<usize>,
    /// Wall time of the deployment, in seconds.
    pub seconds: f64,
}

/// `<model without extension>_tpu_outputs.npz`, as TPU-MLIR names it.
pub fn outputs_path(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}_tpu_outputs.npz"))
}

/// Runs `model_deploy`: quantizes, checks on the test arrays (a comparison
/// below the tolerance is [`Error::CheckFailed`] and nothing is written),
/// writes the QDQ ONNX model and the report. The deployment's summary, the
/// comparison and the files written are said through `reporter` (lines and
/// notes).
pub fn model_deploy(r: &ModelDeploy, reporter: &dyn Reporter) -> Result<Deployed> {
    let start = Instant::now();
    crate::deploy::check_output(&r.output)?;
    r.report.check()?;
    let mode = r.settings.mode;
    let tol_text = r
        .tolerance
        .clone()
        .unwrap_or_else(|| default_tolerance(mode).to_string());
    let tol = Tolerance::parse(&tol_text)
        .map_err(|e| Error::setting("tolerance", format!("--tolerance: {e}")))?;
    if r.test_reference.is_some() && r.test_input.is_none() {
        return Err(Error::setting(
            "test_reference",
            "--test_reference needs --test_input (the arrays to run the model on)",
        ));
    }
    // `--test_reference` is read on another thread while the model is
    // quantized (which leaves a core idle); with an HTML report that thread
    // also computes the report's histograms of the reference's tensors.
    let early_wanted = r.report.html.is_some()
        && r.test_input.is_some()
        && Processor::parse(&r.settings.processor).is_some();
    let (deployment, reference) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<qtune_ir::Graph>();
        let reader = r.test_reference.as_deref().map(|p| {
            s.spawn(move || -> Result<(Arrays, Option<EarlyHistograms>)> {
                let refs = read_npz(p)?;
                let early = match rx.recv() {
                    Ok(g) => EarlyHistograms::compute(&g, &refs).context("measuring the report")?,
                    Err(_) => None,
                };
                Ok((refs, early))
            })
        });
        let mut tx = early_wanted.then_some(tx);
        let deployment = crate::deploy_observed(&r.input, &r.settings, reporter, &mut |g| {
            if let Some(tx) = tx.take() {
                // A closed channel only means the reader stopped on an
                // error, which it reports itself.
                let _ = tx.send(g.clone());
            }
        });
        drop(tx);
        let reference = reader.map(|h| {
            h.join().map_err(|_| Error::Internal {
                message: "reading --test_reference: the thread panicked".into(),
            })
        });
        (deployment, reference)
    });
    let deployment = deployment?;
    let (refs, early) = match reference {
        Some(x) => {
            let (refs, early) = x??;
            (Some(refs), early)
        }
        None => (None, None),
    };
    for line in deployment.summary() {
        reporter.note(&line);
    }
    let arrays = match &r.test_input {
        Some(p) => Some(read_npz(p)?),
        None => None,
    };
    // The report is measured beside the runs made anyway: its tables are
    // read and its measurer made before them.
    let tables = if r.report.wanted() {
        Some(ReportTables::read(r, &deployment.graph)?)
    } else {
        None
    };
    let mut measurer = match &tables {
        Some(t) => {
            measurer(r, &deployment, t, arrays.as_deref())?.map(|m| m.with_early_histograms(early))
        }
        None => None,
    };
    let mut done = Deployed {
        packed_nbits: 0,
        outputs_npz: None,
        compared: None,
        seconds: 0.0,
    };
    if let (Some(input), Some(arrays)) = (&r.test_input, &arrays) {
        let check = Check {
            tolerance: tol,
            tolerance_text: &tol_text,
            reference: refs.as_deref(),
        };
        verify(
            r,
            &deployment,
            input,
            arrays,
            check,
            measurer.as_mut(),
            reporter,
            &mut done,
        )?;
    }
    // The npz written above keeps TPU-MLIR's op names, as TPU-MLIR's
    // `_tpu_outputs.npz` and `--test_reference` files do; the model takes
    // the source's ONNX names. The report's last pending measures (the
    // last sample's isolated run and histograms) run meanwhile.
    let (packed, measured) = std::thread::scope(|s| {
        let pending = measurer.map(|m| s.spawn(move || m.finish()));
        let packed = deployment.write_onnx(&r.output);
        let measured = pending.map(|h| {
            h.join().map_err(|_| Error::Internal {
                message: "measuring the report: the thread panicked".into(),
            })
        });
        (packed, measured)
    });
    done.packed_nbits = packed?;
    let measured = match measured {
        Some(m) => Some(m?.context("measuring the report")?),
        None => None,
    };
    done.seconds = start.elapsed().as_secs_f64();
    let nbits = match done.packed_nbits {
        0 => String::new(),
        n => format!(" ({n} 4-bit weight-only layers as com.microsoft MatMulNBits)"),
    };
    reporter.note(&format!(
        "wrote {}{nbits} in {:.2} s",
        r.output.display(),
        done.seconds
    ));
    if let Some(t) = &tables {
        write_report(
            r,
            mode,
            done.seconds,
            &deployment.graph,
            t,
            measured,
            reporter,
        )?;
    }
    Ok(done)
}

/// The comparison of the test outputs.
struct Check<'a> {
    tolerance: Tolerance,
    tolerance_text: &'a str,
    reference: Option<&'a [(String, Tensor)]>,
}

/// Runs the simulation on the test input (`arrays`), writes its outputs,
/// and compares them with the reference. With a report, `measurer`
/// measures beside the runs (the reference arrays serve as the float
/// model's tensors when they hold every one it reads).
#[allow(clippy::too_many_arguments)]
fn verify(
    r: &ModelDeploy,
    deployment: &Deployment,
    input: &Path,
    arrays: &[(String, Tensor)],
    check: Check,
    measurer: Option<&mut Measurer>,
    reporter: &dyn Reporter,
    done: &mut Deployed,
) -> Result<()> {
    let source = input.display().to_string();
    // Several stacked samples run one by one and their outputs are written
    // stacked the same way (to check the export on a whole validation set);
    // a comparison with the reference takes one sample, as TPU-MLIR's.
    if r.test_reference.is_some() {
        let n = deployment.sample_count(arrays, &source)?;
        if n != 1 {
            let g = deployment.simulation.graph();
            return Err(Error::setting(
                "test_input",
                format!(
                    "--test_input {source}: holds {n} samples for a batch-{} model; give one with \
                     --test_reference",
                    g.inputs
                        .first()
                        .and_then(|&i| g.shape_of(i).ok())
                        .and_then(|s| s.dims().first().copied())
                        .unwrap_or(1)
                ),
            ));
        }
    }
    let named = match measurer {
        None => deployment.simulate(arrays, r.compare_all, &source)?,
        Some(m) => {
            let sim = &deployment.simulation;
            let g = sim.graph();
            let refs = check.reference;
            deployment.simulate_each(arrays, r.compare_all, &source, &mut |inputs, keep| {
                if m.wants_sample() {
                    let named: Vec<(String, Tensor)> = inputs
                        .into_iter()
                        .map(|(id, t)| (g.value(id).name.clone(), t))
                        .collect();
                    Ok(m.sample(&named, refs, keep)?)
                } else {
                    let opts = RunOptions::new(keep.clone(), Parallelism::Rayon);
                    Ok(sim.run(inputs, &opts, &mut NoHook)?)
                }
            })?
        }
    };
    let out_npz = outputs_path(&r.output);
    write_npz(&out_npz, &named)?;
    done.outputs_npz = Some(out_npz.clone());
    if let (Some(reference), Some(refs)) = (&r.test_reference, check.reference) {
        let excepts: Vec<&str> = r.excepts.iter().map(String::as_str).collect();
        let compared = crate::compare::check(
            &named,
            refs,
            check.tolerance,
            check.tolerance_text,
            &excepts,
            false,
            (&out_npz, reference),
            reporter,
        )?;
        done.compared = Some(compared);
    }
    Ok(())
}

/// The tables a report of the deployment shows.
struct ReportTables {
    table: Option<CalibrationTable>,
    qtable: Vec<(String, QuantMode)>,
}

impl ReportTables {
    fn read(r: &ModelDeploy, graph: &qtune_ir::Graph) -> Result<Self> {
        Ok(ReportTables {
            table: match &r.settings.calibration_table {
                Some(p) => Some(CalibrationTable::read(p)?),
                None => None,
            },
            qtable: match &r.settings.quantize_table {
                Some(p) => report::qtable_rows(graph, p, None)?,
                None => Vec::new(),
            },
        })
    }
}

/// The measurer of the report, for the samples of the test input it
/// measures: all of them for a report or chart, the first for the text
/// table alone. None when qtune does not simulate the processor.
fn measurer<'a>(
    r: &ModelDeploy,
    deployment: &'a Deployment,
    tables: &'a ReportTables,
    arrays: Option<&[(String, Tensor)]>,
) -> Result<Option<Measurer<'a>>> {
    let Some(processor) = Processor::parse(&r.settings.processor) else {
        return Ok(None);
    };
    let fp_type = processor
        .profile()
        .float_type(&r.settings.fp_type)
        .map_err(|e| Error::setting("fp_type", e))?;
    let count = match (arrays, &r.test_input) {
        (Some(a), Some(p)) => {
            let n = deployment.sample_count(a, &p.display().to_string())?;
            if r.report.html.is_some() || r.report.plot.is_some() {
                n
            } else {
                n.min(report::RUN_REPORT_SAMPLES)
            }
        }
        _ => 0,
    };
    let m = Measurer::new(
        &GatherRequest {
            graph: &deployment.graph,
            processor,
            quantize: deployment.mode,
            table: tables.table.as_ref(),
            qtable: &tables.qtable,
            fp_type,
            asymmetric: r.settings.asymmetric,
            matmul_per_channel: r.settings.matmul_per_channel,
            method_tables: Vec::new(),
            histograms: r.report.html.is_some(),
            prebuilt: Some(Prebuilt {
                plan: &deployment.quantized.plan,
                sim: &deployment.simulation,
            }),
        },
        count,
    )
    .context("measuring the report")?;
    Ok(Some(m))
}

/// The report of the deployed model, measured on the test input.
fn write_report(
    r: &ModelDeploy,
    mode: QuantMode,
    deploy_time: f64,
    graph: &qtune_ir::Graph,
    tables: &ReportTables,
    measured: Option<Gathered>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let mut outputs = vec![r.output.display().to_string()];
    if r.test_input.is_some() {
        outputs.push(outputs_path(&r.output).display().to_string());
    }
    let mut counts = vec![qtune_report::Entry::new("quantize", mode)];
    if let Some(p) = &r.settings.calibration_table {
        counts.push(qtune_report::Entry::new("calibration table", p.display()));
    }
    if let Some(p) = &r.settings.quantize_table {
        counts.push(qtune_report::Entry::new("qtable", p.display()));
    }
    report::finish(
        &r.report,
        RunFacts {
            title: "model_deploy".into(),
            model: &r.input,
            graph,
            processor: &r.settings.processor,
            dataset: r
                .test_input
                .as_ref()
                .map(|p| format!("{} (--test_input)", p.display()))
                .unwrap_or_else(|| "none (no --test_input)".into()),
            table: tables.table.as_ref(),
            qtable: &tables.qtable,
            fp_type: &r.settings.fp_type,
            quantize: mode,
            asymmetric: r.settings.asymmetric,
            matmul_per_channel: r.settings.matmul_per_channel,
            samples: Vec::new(),
            method_tables: Vec::new(),
            counts,
            timings: vec![qtune_report::Timing::new("deploy", deploy_time)],
            outputs,
            search: None,
            transforms: Vec::new(),
            notes: Vec::new(),
            prebuilt: None,
            measured,
        },
        reporter,
    )
}
