use std::path::PathBuf;

use anyhow::Result;
use qtune_tensor::compare::Tolerance;
use qtune_tensor::read_npz;

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
    qtune::compare::check(
        &target,
        &reference,
        tol,
        &args.tolerance,
        &excepts,
        args.verbose,
        (&args.target, &args.reference),
        &crate::progress::Bar::new(false),
    )?;
    Ok(())
}
