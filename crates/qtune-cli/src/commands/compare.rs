use std::path::{Path, PathBuf};

use anyhow::Result;
use qtune_tensor::compare::Tolerance;
use qtune_tensor::{Tensor, read_npz};

use crate::CheckFailed;

#[derive(clap::Args)]
pub struct Args {
    /// Target npz.
    target: PathBuf,
    /// Reference npz.
    reference: PathBuf,
    /// Minimum similarity `cos,euclid`; a tensor passes when its cosine and
    /// euclidean similarity both exceed them.
    #[arg(long, default_value = "0.99,0.99")]
    tolerance: String,
    /// Comma-separated tensor names to skip.
    #[arg(long)]
    excepts: Option<String>,
    /// Print every tensor, not only failures.
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(args: Args) -> Result<()> {
    let tol = Tolerance::parse(&args.tolerance).map_err(anyhow::Error::msg)?;
    let target = read_npz(&args.target)?;
    let reference = read_npz(&args.reference)?;
    let excepts: Vec<&str> = args
        .excepts
        .as_deref()
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    check(
        &target,
        &reference,
        tol,
        &args.tolerance,
        &excepts,
        args.verbose,
        (&args.target, &args.reference),
    )
}

/// Compares the tensors two sets have in common (by name), prints
/// `npz_tool compare`'s summary, and fails with [`CheckFailed`] when a tensor
/// is below the tolerance or no name is shared.
pub fn check(
    target: &[(String, Tensor)],
    reference: &[(String, Tensor)],
    tol: Tolerance,
    tol_text: &str,
    excepts: &[&str],
    verbose: bool,
    files: (&Path, &Path),
) -> Result<()> {
    let report = qtune::compare::compare(target, reference, tol, excepts);
    for line in report.lines(verbose) {
        println!("{line}");
    }
    let (compared, failed) = (report.compared(), report.failed());
    if compared == 0 {
        return Err(CheckFailed(format!(
            "no tensor names in common between `{}` and `{}`",
            files.0.display(),
            files.1.display()
        ))
        .into());
    }
    if failed > 0 {
        return Err(CheckFailed(format!(
            "{failed} of {compared} tensors below tolerance {tol_text}"
        ))
        .into());
    }
    Ok(())
}
