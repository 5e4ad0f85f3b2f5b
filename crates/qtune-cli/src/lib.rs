//! The qtune command-line tools: the `qtune` binary with subcommands, and
//! binaries named like TPU-MLIR's tools (`model_transform`, ...) that accept
//! TPU-MLIR's flag spellings.
//!
//! Exit codes: 0 success; 1 a check failed (e.g. `compare` below the
//! tolerance); 2 bad input or usage (unreadable model, wrong shapes, missing
//! files, unknown flags).

pub mod commands;
pub(crate) mod flags;
pub mod model;
pub(crate) mod progress;
pub mod py_names;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Post-training quantization toolkit (float inference and model inspection).
///
/// Exit codes: 0 success, 1 a check failed (compare below tolerance),
/// 2 bad input or usage.
#[derive(Parser)]
#[command(name = "qtune", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inputs, outputs, op counts, and node and tensor names in order.
    Info(commands::info::Args),
    /// Runs a model on the arrays of an npz file (like TPU-MLIR's model_runner).
    Run(commands::run::Args),
    /// Compares the arrays of two npz files (like TPU-MLIR's `npz_tool compare`).
    Compare(commands::compare::Args),
    /// Classifies images and prints the top classes (float model).
    Classify(commands::classify::Args),
    /// Detects objects with a YOLOX or YOLOv8 model, prints the boxes and draws them.
    Detect(commands::detect::Args),
    /// Imports a model and writes TPU-MLIR Top-dialect .mlir (same as `model_transform`).
    Transform(commands::transform::Args),
    /// Times float inference (used by bench/ort_compare.py).
    Bench(commands::bench::Args),
    /// Computes the calibration table (same as `run_calibration`).
    Calibrate(Box<commands::calibrate::Args>),
    /// Quantizes a model, checks it, and writes QDQ ONNX (same as `model_deploy`).
    Deploy(Box<commands::deploy::Args>),
    /// Writes a qtable keeping layers before/after/between named ops in float (same as `fp_forward`).
    FpForward(commands::fp_forward::Args),
    /// Mixed-precision qtable by per-layer similarity (same as `run_qtable`).
    #[command(name = "run_qtable", alias = "run-qtable")]
    RunQtable(Box<commands::search::QtableArgs>),
    /// Sensitive-layer search (same as `run_sensitive_layer`).
    #[command(name = "run_sensitive_layer", alias = "run-sensitive-layer")]
    RunSensitiveLayer(Box<commands::search::SensitiveArgs>),
    /// Writes a model as ONNX (opset 17) after constant folding and, unless
    /// --no_fold_bn, BatchNormalization folding.
    Export(commands::export::Args),
    /// Makes `model_transform.py`, `run_calibration.py`, `model_deploy.py`,
    /// `fp_forward.py`, `run_qtable.py` and `run_sensitive_layer.py` next to
    /// the installed tools (links; run once after `cargo install`, since
    /// Cargo cannot name a binary with a dot).
    #[command(name = "install-py-names", alias = "install_py_names")]
    InstallPyNames(InstallPyNamesArgs),
    /// Writes the HTML report of a model quantized with a calibration table
    /// (and a qtable): per-layer similarity, histograms, weight ranges.
    Report(Box<commands::report::Args>),
}

#[derive(clap::Args)]
struct InstallPyNamesArgs {
    /// Directory of the tools (default: the directory of this `qtune`).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn install_py_names(args: InstallPyNamesArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find the qtune executable: {e}"))?;
            exe.parent()
                .map(std::path::Path::to_path_buf)
                .ok_or_else(|| anyhow::anyhow!("`{}` has no directory", exe.display()))?
        }
    };
    let done = py_names::link_py_names(&dir, true)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for outcome in done {
        match outcome {
            py_names::PyNameOutcome::Created(p) => println!("created {}", p.display()),
            py_names::PyNameOutcome::Present(p) => println!("present {}", p.display()),
        }
    }
    Ok(())
}

/// An error that maps to exit code 1 (a check ran and failed) rather than 2.
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// Whether `e` says a check ran and failed (exit code 1): the CLI's own
/// [`CheckFailed`] or the library's [`qtune::Error::CheckFailed`].
pub fn is_check_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<CheckFailed>().is_some()
            || matches!(
                c.downcast_ref::<qtune::Error>(),
                Some(qtune::Error::CheckFailed { .. })
            )
    })
}

/// A parsed command line that wants to know which flags were given on it
/// (not defaulted): `run_calibration` checks them against its `--search`
/// mode.
pub trait GivenFlags {
    /// `given`: the ids (field names, which are the long flag names) of the
    /// arguments given on the command line.
    fn set_given(&mut self, _given: Vec<String>) {}
}

/// The ids of the arguments given on the command line, in the innermost
/// subcommand's matches.
fn given_ids(matches: &clap::ArgMatches) -> Vec<String> {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.ids()
        .filter(|id| {
            // Groups (one per flattened struct) have no value source.
            m.try_get_raw(id.as_str()).is_ok()
                && m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
        })
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Parses the command line as `P` and runs `run` on it, mapping errors to
/// exit codes (see the crate docs). Every binary's `main` is this call.
pub fn main_with<P: Parser + GivenFlags>(run: impl FnOnce(P) -> anyhow::Result<()>) -> ExitCode {
    ExitCode::from(main_from(std::env::args_os(), run))
}

/// [`main_with`] on the given command line (`argv[0]` first) instead of the
/// process's, returning the exit code as a number.
fn main_from<P: Parser + GivenFlags>(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
    run: impl FnOnce(P) -> anyhow::Result<()>,
) -> u8 {
    keep_freed_memory();
    let fail = |e: clap::Error| {
        let code = if e.use_stderr() { 2 } else { 0 };
        let _ = e.print();
        code
    };
    let mut command = P::command();
    let mut matches = match command.try_get_matches_from_mut(argv) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let given = given_ids(&matches);
    let mut parsed = match P::from_arg_matches_mut(&mut matches) {
        Ok(p) => p,
        Err(e) => return fail(e.format(&mut command)),
    };
    parsed.set_given(given);
    match run(parsed) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_check_failure(&e) { 1 } else { 2 }
        }
    }
}

/// The names [`tool_main`] answers to: `qtune` and the TPU-MLIR tools
/// ([`py_names::PY_TOOLS`], in its order).
pub const TOOLS: [&str; 7] = {
    let mut tools = ["qtune"; 7];
    let mut i = 0;
    while i < py_names::PY_TOOLS.len() {
        tools[i + 1] = py_names::PY_TOOLS[i];
        i += 1;
    }
    tools
};

/// Runs the binary `tool` (one of [`TOOLS`]) in this process on `argv`
/// (`argv[0]` first, as the binary would get it) and returns its exit code;
/// `None` when `tool` is not one of them. The Python package's console
/// scripts are this call.
pub fn tool_main(tool: &str, argv: Vec<std::ffi::OsString>) -> Option<u8> {
    use commands::{calibrate, deploy, fp_forward, search, transform};
    Some(match tool {
        "qtune" => main_from(argv, |cli: Cli| dispatch(cli.command)),
        "model_transform" => main_from(argv, |a: transform::ToolArgs| transform::run(a.args)),
        "run_calibration" => main_from(argv, |a: calibrate::ToolArgs| calibrate::run(a.args)),
        "model_deploy" => main_from(argv, |a: deploy::ToolArgs| deploy::run(a.args)),
        "fp_forward" => main_from(argv, |a: fp_forward::ToolArgs| fp_forward::run(a.args)),
        "run_qtable" => main_from(argv, |a: search::QtableTool| search::run_qtable(a.args)),
        "run_sensitive_layer" => main_from(argv, |a: search::SensitiveTool| {
            search::run_sensitive_layer(a.args)
        }),
        _ => return None,
    })
}

impl GivenFlags for Cli {
    fn set_given(&mut self, given: Vec<String>) {
        if let Command::Calibrate(args) = &mut self.command {
            args.given = given;
        }
    }
}

impl GivenFlags for commands::calibrate::ToolArgs {
    fn set_given(&mut self, given: Vec<String>) {
        self.args.given = given;
    }
}

impl GivenFlags for commands::transform::ToolArgs {}
impl GivenFlags for commands::deploy::ToolArgs {}
impl GivenFlags for commands::fp_forward::ToolArgs {}
impl GivenFlags for commands::search::QtableTool {}
impl GivenFlags for commands::search::SensitiveTool {}

/// Tells glibc's allocator to keep freed memory for reuse. Calibration and
/// tuning free and allocate activations of the same few sizes over and over;
/// by default glibc serves the large ones with fresh `mmap`s and gives freed
/// heap tops back to the kernel, so every reuse page-faults and zeroes the
/// pages again (a third of the tuning time went to page faults).
///
/// One arena for all threads: with glibc's default of one per thread, which
/// arena the executor's thread drew changed from run to run, and on some runs
/// its large blocks went back to the kernel and faulted in again on every
/// inference (ppocr_v4_det640 at batch 1: 200,000 page faults in 23 runs
/// instead of 25,000, 30 % slower). The kernels keep their scratch per thread,
/// so the shared arena's lock is taken once per tensor, not per element.
///
/// `MALLOC_*`/`GLIBC_TUNABLES` settings are overridden.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc caps the mmap threshold at 32 MiB on 64-bit targets.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // SAFETY: mallopt only changes allocator parameters, under glibc's
        // arena lock (it is MT-safe: the Python package's console scripts
        // call it after the interpreter has started its threads).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// The `qtune` binary.
pub fn qtune_main() -> ExitCode {
    main_with(|cli: Cli| dispatch(cli.command))
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Info(a) => commands::info::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Deploy(a) => commands::deploy::run(*a),
        Command::FpForward(a) => commands::fp_forward::run(a),
        Command::RunQtable(a) => commands::search::run_qtable(*a),
        Command::RunSensitiveLayer(a) => commands::search::run_sensitive_layer(*a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Classify(a) => commands::classify::run(a),
        Command::Detect(a) => commands::detect::run(a),
        Command::Transform(a) => commands::transform::run(a),
        Command::Calibrate(a) => commands::calibrate::run(*a),
        Command::Export(a) => commands::export::run(a),
        Command::InstallPyNames(a) => install_py_names(a),
        Command::Report(a) => commands::report::run(*a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }

    #[test]
    fn tool_main_runs_each_tool_and_maps_exit_codes() {
        assert_eq!(tool_main("npz_tool", argv(&["npz_tool"])), None);
        for tool in TOOLS {
            // --help prints to stdout and succeeds; an unknown flag is a
            // usage error (exit 2), as with the binaries.
            assert_eq!(tool_main(tool, argv(&[tool, "--help"])), Some(0), "{tool}");
            assert_eq!(
                tool_main(tool, argv(&[tool, "--no_such_flag"])),
                Some(2),
                "{tool}"
            );
        }
        // A command that runs and fails on bad input exits 2.
        assert_eq!(
            tool_main("qtune", argv(&["qtune", "info", "/nonexistent/m.onnx"])),
            Some(2)
        );
    }

    /// The modules of this crate (`flags`, `commands::search`, ...) with
    /// the source of each.
    fn crate_modules() -> Vec<(String, String)> {
        fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<(String, String)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    if stem != "bin" {
                        walk(&p, &format!("{prefix}{stem}::"), out);
                    }
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let name = match stem.as_str() {
                        "mod" => prefix.trim_end_matches("::").to_string(),
                        "lib" => String::new(),
                        _ => format!("{prefix}{stem}"),
                    };
                    out.push((name, std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            "",
            &mut out,
        );
        out
    }

    /// The modules `source` (module `module`) names through `crate::` or
    /// `super::` paths, resolved to the longest module prefix.
    fn imports(module: &str, source: &str, modules: &[String]) -> Vec<String> {
        let parent: Vec<&str> = module
            .rsplit_once("::")
            .map_or(Vec::new(), |(p, _)| p.split("::").collect());
        let mut out = Vec::new();
        for (i, _) in source
            .match_indices("crate::")
            .chain(source.match_indices("super::"))
        {
            if source[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let path: String = source[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            if parts[0] == "super" {
                parts.splice(0..1, parent.iter().copied());
            } else {
                parts.remove(0);
            }
            for k in (1..=parts.len()).rev() {
                let candidate = parts[..k].join("::");
                if candidate != module && modules.contains(&candidate) {
                    out.push(candidate);
                    break;
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// No two modules of the CLI import each other, directly or through
    /// others: the flag structs, the printing and the commands form a
    /// layering, not a circle.
    #[test]
    fn no_module_imports_form_a_circle() {
        let sources = crate_modules();
        let names: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
        assert!(
            names.contains(&"commands::search".to_string()) && names.contains(&"flags".to_string())
        );
        let edges: Vec<Vec<String>> = sources.iter().map(|(n, s)| imports(n, s, &names)).collect();
        // The import list of `flags` names what it uses (a check that the
        // scan sees imports at all).
        let flags = names.iter().position(|n| n == "flags").unwrap();
        assert!(edges[flags].contains(&"commands::preprocess_args".to_string()));
        let index = |n: &str| names.iter().position(|m| m == n).unwrap();
        for start in 0..names.len() {
            // Depth-first from `start`: reaching it again is a circle.
            let mut stack: Vec<(usize, Vec<usize>)> = vec![(start, vec![start])];
            let mut seen = vec![false; names.len()];
            while let Some((node, path)) = stack.pop() {
                for next in &edges[node] {
                    let j = index(next);
                    assert!(
                        j != start,
                        "modules import each other in a circle: {}",
                        path.iter()
                            .chain(std::iter::once(&j))
                            .map(|&k| names[k].as_str())
                            .collect::<Vec<_>>()
                            .join(" -> ")
                    );
                    if !seen[j] {
                        seen[j] = true;
                        let mut p = path.clone();
                        p.push(j);
                        stack.push((j, p));
                    }
                }
            }
        }
    }
}
