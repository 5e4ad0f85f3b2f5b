//! The one place where the Python package reaches qtune's pipeline.
//!
//! Model loading, float inference, plain calibration, deployment and the
//! comparison are the library facade's typed calls (`qtune::model::load`,
//! `qtune::calibrate`, `qtune::deploy`, `qtune::compare::compare`). The
//! calls whose options are documented as a tool's flags by name
//! (`calibrate`'s options, `transform`) parse them with that tool's own flag
//! struct, so a flag the tool does not take is rejected with clap's message
//! as on the command line, then make the facade's calls as the command
//! does (`qtune::model_transform`, the searches of `qtune::search`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::Parser;
use qtune::search::SearchOutcome;
use qtune_cli::commands::{calibrate, search, transform};
use qtune_tensor::Tensor;
use qtune_tensor::compare::Tolerance;

/// One command-line flag: `--name` alone (a switch) or `--name value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

/// A tool's command line: `argv[0]`, then `head` (positional arguments and
/// the flags the entry point sets itself), then the caller's flags.
fn argv(tool: &str, head: &[OsString], flags: &[Flag]) -> Result<Vec<OsString>> {
    let mut v: Vec<OsString> = vec![tool.into()];
    v.extend(head.iter().cloned());
    for f in flags {
        if f.name.is_empty()
            || f.name.starts_with('-')
            || !f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            bail!(
                "option `{}` of {tool}: expected a flag name such as `input_num` \
                 (letters, digits and `_`)",
                f.name
            );
        }
        v.push(format!("--{}", f.name).into());
        if let Some(value) = &f.value {
            // `--name=value` keeps values that start with `-` (a negative
            // mean) from being read as flags.
            v.pop();
            v.push(format!("--{}={value}", f.name).into());
        }
    }
    Ok(v)
}

/// Parses a tool's command line with its flag struct; a parse error is an
/// error carrying clap's message (unknown flag, missing value, ...).
fn parse<P: Parser>(argv: Vec<OsString>) -> Result<P> {
    P::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))
}

fn os(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

/// `model_transform`: imports `model_def` and writes the Top `.mlir`.
pub fn transform(model_def: &Path, mlir: &Path, flags: &[Flag]) -> Result<()> {
    let head = [
        "--model_def".into(),
        os(model_def),
        "--mlir".into(),
        os(mlir),
    ];
    let a: transform::ToolArgs = parse(argv("model_transform", &head, flags)?)?;
    let settings = a.args.settings();
    qtune::with_threads(a.args.threads(), || {
        qtune::model_transform(&settings, &Console { verbose: true })
    })?;
    Ok(())
}

/// Where console lines and warnings of a facade call go: stdout and
/// stderr as the tools print them, lines only when `verbose`.
struct Console {
    verbose: bool,
}

impl qtune::Progress for Console {}

impl qtune::Reporter for Console {
    fn line(&self, line: &str) {
        if self.verbose {
            println!("{line}");
        }
    }
    fn warning(&self, line: &str) {
        eprintln!("{line}");
    }
    fn note(&self, line: &str) {
        if self.verbose {
            eprintln!("{line}");
        }
    }
}

/// `run_calibration` (plain calibration, or a search with `search=...`):
/// writes the calibration table to `table`. `flags` are run_calibration's
/// flags by name; `samples`, when given, are the calibration samples in
/// memory (each maps input names to arrays; a single-input model may use
/// any one key) instead of `--dataset` / `--data_list`. A search returns
/// what it found.
pub fn calibrate(
    model: &Path,
    table: &Path,
    flags: &[Flag],
    samples: Option<Vec<BTreeMap<String, Tensor>>>,
) -> Result<Option<SearchOutcome>> {
    let head = [os(model), "-o".into(), os(table)];
    let a: calibrate::ToolArgs = parse(argv("run_calibration", &head, flags)?)?;
    let args = a.args;
    calibrate::check(&args)?;
    let source = samples.map(qtune::CalibrationSource::from_samples);
    let console = Console {
        verbose: !args.quiet,
    };
    if args.searching() {
        let search = search::CalibrationSearch::from_args(&args, source)?;
        let found = qtune::with_threads(args.threads, || search.run(&console))?;
        return Ok(Some(found));
    }
    qtune::with_threads(args.threads, || {
        calibrate::run_plain(&args, source, &console).map_err(qtune::Error::from)
    })?;
    Ok(None)
}

/// What `qtune.quantize` deploys: `model_deploy`'s settings as values.
pub struct DeployRequest {
    pub model: PathBuf,
    pub output: PathBuf,
    /// `--quantize` (INT8, F16, ...; any case).
    pub quantize: String,
    pub processor: String,
    pub calibration_table: Option<PathBuf>,
    pub quantize_table: Option<PathBuf>,
    pub asymmetric: bool,
    /// npz of input arrays to run the quantized model on (its outputs are
    /// written to `<output stem>_tpu_outputs.npz`).
    pub test_input: Option<PathBuf>,
    /// npz of reference outputs the quantized model must match (within
    /// model_deploy's default tolerance) before anything is written.
    pub test_reference: Option<PathBuf>,
    pub threads: Option<usize>,
    pub verbose: bool,
}

/// `model_deploy` through the facade (`qtune::model_deploy`): quantizes
/// `r.model`, checks it on the test arrays when given (a failed check is a
/// `qtune::Error::CheckFailed`, and nothing is written), and writes the QDQ
/// ONNX model `r.output`.
pub fn deploy(r: &DeployRequest) -> Result<()> {
    let mut settings = qtune::QuantizeSettings::default();
    settings.mode =
        qtune::deploy::parse_quantize_mode(Some(&r.quantize), r.calibration_table.is_some())?;
    settings.processor = r.processor.clone();
    settings.calibration_table = r.calibration_table.clone();
    settings.quantize_table = r.quantize_table.clone();
    settings.asymmetric = r.asymmetric;
    let mut d = qtune::ModelDeploy::new(&r.model, settings, &r.output);
    d.test_input = r.test_input.clone();
    d.test_reference = r.test_reference.clone();
    let console = Console { verbose: r.verbose };
    qtune::with_threads(r.threads, || qtune::model_deploy(&d, &console))?;
    Ok(())
}

/// Compares named target and reference arrays as `npz_tool compare` does
/// (the names both hold, in the target's order).
pub fn compare(
    target: &[(String, Tensor)],
    reference: &[(String, Tensor)],
    tolerance: Tolerance,
) -> Vec<(String, qtune_tensor::compare::Comparison)> {
    qtune::compare::compare(target, reference, tolerance, &[])
        .tensors
        .into_iter()
        .map(|t| (t.name, t.comparison))
        .collect()
}

/// `run_qtable`: writes the qtable `qtable` (and the loss table).
pub fn run_qtable(
    model: &Path,
    qtable: &Path,
    flags: &[Flag],
    samples: Option<Vec<BTreeMap<String, Tensor>>>,
) -> Result<SearchOutcome> {
    let head = [os(model), "-o".into(), os(qtable)];
    let a: search::QtableTool = parse(argv("run_qtable", &head, flags)?)?;
    let console = Console {
        verbose: !a.args.quiet(),
    };
    let source = samples.map(qtune::CalibrationSource::from_samples);
    a.args.execute(source, &console)
}

/// `run_sensitive_layer`: writes the qtable `qtable`.
pub fn sensitive_layers(
    model: &Path,
    qtable: &Path,
    flags: &[Flag],
    samples: Option<Vec<BTreeMap<String, Tensor>>>,
) -> Result<SearchOutcome> {
    let head = [os(model), "-o".into(), os(qtable)];
    let a: search::SensitiveTool = parse(argv("run_sensitive_layer", &head, flags)?)?;
    let console = Console {
        verbose: !a.args.quiet(),
    };
    let source = samples.map(qtune::CalibrationSource::from_samples);
    a.args.execute(source, &console)
}

/// Float inference: runs `model` on `inputs` (keyed by graph input name;
/// an array may stack several samples on axis 0, as for `qtune run`) and
/// returns the graph outputs by name, in graph order.
pub fn run(
    model: &Path,
    input_shapes: Option<&str>,
    inputs: &[(String, Tensor)],
    threads: Option<usize>,
) -> Result<Vec<(String, Tensor)>> {
    qtune::with_threads(threads, || -> qtune::Result<_> {
        let exec = qtune::model::load(model, input_shapes)?;
        Ok(qtune::model::run_arrays(&exec, inputs, "inputs", false)?.0)
    })
    .map_err(anyhow::Error::from)
}

/// A fresh temporary directory for outputs the caller does not keep.
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("{prefix}-{}-{nanos}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating `{}`", dir.display())),
        }
    }
    bail!(
        "cannot create a temporary directory in `{}`",
        base.display()
    )
}
