use std::path::{Path, PathBuf};

use anyhow::Result;
use qtune_tensor::compare::{Tolerance, Verdict, compare_tensors};
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
    let (mut compared, mut failed) = (0usize, 0usize);
    let (mut equal, mut close, mut similar, mut not_similar, mut not_match) = (0, 0, 0, 0, 0);
    let mut min = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for (name, t) in target {
        if excepts.contains(&name.as_str()) {
            continue;
        }
        let Some((_, r)) = reference.iter().find(|(n, _)| n == name) else {
            continue;
        };
        compared += 1;
        let c = compare_tensors(t, r, tol);
        match c.verdict {
            Verdict::Equal => equal += 1,
            Verdict::Close => close += 1,
            Verdict::Similar => similar += 1,
            Verdict::NotSimilar => not_similar += 1,
            Verdict::NotMatch => not_match += 1,
        }
        if let Some(s) = c.similarity {
            min = (
                min.0.min(s.cosine),
                min.1.min(s.euclidean),
                min.2.min(s.sqnr),
            );
        }
        if !c.verdict.passed() {
            failed += 1;
        }
        if verbose || !c.verdict.passed() {
            match c.similarity {
                Some(s) => println!(
                    "{name:<40} {:<12} cos {:.6} euclid {:.6} sqnr {:.3} max_abs_diff {:.6e} {}",
                    c.verdict.name(),
                    s.cosine,
                    s.euclidean,
                    s.sqnr,
                    s.max_abs_diff,
                    t.shape()
                ),
                None => println!(
                    "{name:<40} {:<12} shapes {} vs {}",
                    c.verdict.name(),
                    t.shape(),
                    r.shape()
                ),
            }
        }
    }
    println!("{compared} compared");
    println!("{} passed", compared - failed);
    println!("  {equal} equal, {close} close, {similar} similar");
    println!("{failed} failed");
    println!("  {not_match} not equal, {not_similar} not similar");
    println!(
        "min_similarity = ({:.6}, {:.6}, {:.6})",
        min.0, min.1, min.2
    );
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
