//! The one place where the Python package reaches qtune's pipeline.
//!
//! Today the pipeline (calibration, searches, deployment, model_transform)
//! lives in the command functions of `qtune-cli`, so each entry point here
//! builds the command's flags, parses them with the command's own flag
//! struct (so a flag the command does not take is rejected with clap's
//! message, as on the command line) and runs the command in this process.
//! When the `qtune` facade crate lands, these functions are re-pointed to
//! its typed calls; nothing else in this crate calls `qtune-cli`'s commands.
//!
//! Float inference (`run`) and the comparison use the library crates
//! directly and do not go through the commands.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use qtune_cli::commands::{calibrate, deploy, search, transform};
use qtune_exec::{Keep, NoHook};
use qtune_tensor::Tensor;

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
    transform::run(a.args)
}

/// `run_calibration` (plain calibration, or a search with `search=...`):
/// writes the calibration table to `table`.
pub fn calibrate(model: &Path, table: &Path, flags: &[Flag]) -> Result<()> {
    let head = [os(model), "-o".into(), os(table)];
    let a: calibrate::ToolArgs = parse(argv("run_calibration", &head, flags)?)?;
    calibrate::run(a.args)
}

/// `model_deploy`: quantizes `model` and writes the QDQ ONNX model `output`.
pub fn deploy(model: &Path, output: &Path, flags: &[Flag]) -> Result<()> {
    let head = ["--mlir".into(), os(model), "--model".into(), os(output)];
    let a: deploy::ToolArgs = parse(argv("model_deploy", &head, flags)?)?;
    deploy::run(a.args)
}

/// `run_qtable`: writes the qtable `qtable` (and the loss table).
pub fn run_qtable(model: &Path, qtable: &Path, flags: &[Flag]) -> Result<()> {
    let head = [os(model), "-o".into(), os(qtable)];
    let a: search::QtableTool = parse(argv("run_qtable", &head, flags)?)?;
    search::run_qtable(a.args)
}

/// `run_sensitive_layer`: writes the qtable `qtable`.
pub fn sensitive_layers(model: &Path, qtable: &Path, flags: &[Flag]) -> Result<()> {
    let head = [os(model), "-o".into(), os(qtable)];
    let a: search::SensitiveTool = parse(argv("run_sensitive_layer", &head, flags)?)?;
    search::run_sensitive_layer(a.args)
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
    qtune_cli::commands::with_threads(threads, || {
        let exec = qtune_cli::model::load(model, input_shapes)?;
        let samples = qtune_cli::model::samples_from_arrays(&exec, inputs, "inputs")?;
        let mut results = exec.run_samples(samples, &Keep::Outputs, |_| NoHook)?;
        let g = exec.graph();
        let mut out = Vec::with_capacity(g.outputs.len());
        for &id in &g.outputs {
            let name = g.value(id).name.clone();
            // `take` hands each output's buffer over without a copy; an
            // output listed twice is cloned from the first.
            let mut parts = Vec::with_capacity(results.len());
            for (values, _) in &mut results {
                let t = match values.take(id) {
                    Some(t) => t,
                    None => out
                        .iter()
                        .find(|(n, _): &&(String, Tensor)| *n == name)
                        .map(|(_, t)| t.clone())
                        .with_context(|| format!("output `{name}` was not computed"))?,
                };
                parts.push(t);
            }
            let t = if parts.len() == 1 {
                parts.pop().unwrap_or_else(|| unreachable!())
            } else {
                Tensor::concat_outer(&parts)?
            };
            out.push((name, t));
        }
        Ok(out)
    })
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
