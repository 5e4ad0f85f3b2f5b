// The `.py` spellings of the tools (TPU-MLIR's tools are Python scripts, and
// its documentation, the seed included, runs them as `model_transform.py`,
// `run_calibration.py`, `model_deploy.py`, ...).
//
// Cargo cannot build a binary whose name holds a dot (rustc refuses `.` in a
// crate name: "invalid character '.' in crate name"), and `cargo install`
// copies bin targets only, so the `.py` names are links to the binaries:
// `build.rs` makes them next to the binaries of every `cargo build`
// (target/debug, target/release), and `qtune install-py-names` makes them
// next to an installed `qtune` (after `cargo install`). A link runs the same
// binary, so `model_deploy.py ARGS` is `model_deploy ARGS`.
//
// This file is shared by `build.rs` (through `include!`) and the library, so
// it holds plain `//` comments and no inner attributes.

/// The tools qtune ships under TPU-MLIR's names that TPU-MLIR also ships as
/// `python/tools/<name>.py`. TPU-MLIR's `npz_tool.py` and `model_runner.py`
/// are not among them: qtune's counterparts are `qtune compare` and
/// `qtune run`, whose flags differ, so those names would not run the seed's
/// commands as TPU-MLIR does.
pub const PY_TOOLS: [&str; 6] = [
    "model_transform",
    "run_calibration",
    "model_deploy",
    "fp_forward",
    "run_qtable",
    "run_sensitive_layer",
];

/// What [`link_py_names`] did for one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyNameOutcome {
    /// The link was made.
    Created(std::path::PathBuf),
    /// The link was there already, pointing at the tool.
    Present(std::path::PathBuf),
}

/// The path of `<tool>.py` in `dir`.
pub fn py_name_path(dir: &std::path::Path, tool: &str) -> std::path::PathBuf {
    dir.join(format!("{tool}.py{}", std::env::consts::EXE_SUFFIX))
}

/// Makes `<tool>.py` next to `<tool>` in `dir` for every tool of
/// [`PY_TOOLS`]: a relative symbolic link on Unix, a hard link elsewhere.
/// With `require_targets`, a missing tool binary is an error (an installed
/// directory must hold them all); `build.rs` makes the links before cargo
/// links the binaries, so it passes `false`. A file already at a `.py`
/// path that is not a link to the tool is left alone and reported: it may
/// be TPU-MLIR's own script.
pub fn link_py_names(
    dir: &std::path::Path,
    require_targets: bool,
) -> Result<Vec<PyNameOutcome>, String> {
    let mut done = Vec::new();
    let mut problems = Vec::new();
    for tool in PY_TOOLS {
        let file = format!("{tool}{}", std::env::consts::EXE_SUFFIX);
        let target = dir.join(&file);
        let link = py_name_path(dir, tool);
        if require_targets && !target.is_file() {
            problems.push(format!("`{}` is missing", target.display()));
            continue;
        }
        match std::fs::symlink_metadata(&link) {
            Ok(_) => {
                let same = if cfg!(unix) {
                    std::fs::read_link(&link)
                        .is_ok_and(|t| t == std::path::Path::new(&file) || t == target)
                } else {
                    // A hard link: same length and same bytes as the tool.
                    match (std::fs::read(&link), std::fs::read(&target)) {
                        (Ok(a), Ok(b)) => a == b,
                        _ => false,
                    }
                };
                if same {
                    done.push(PyNameOutcome::Present(link));
                } else {
                    problems.push(format!(
                        "`{}` exists and is not a link to `{file}`; left as it is",
                        link.display()
                    ));
                }
            }
            Err(_) => {
                #[cfg(unix)]
                let made = std::os::unix::fs::symlink(&file, &link);
                #[cfg(not(unix))]
                let made = std::fs::hard_link(&target, &link);
                match made {
                    Ok(()) => done.push(PyNameOutcome::Created(link)),
                    Err(e) => problems.push(format!("`{}`: {e}", link.display())),
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(done)
    } else {
        Err(problems.join("; "))
    }
}
