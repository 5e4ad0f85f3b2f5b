pub mod bench;
pub mod classify;
pub mod compare;
pub mod info;
pub mod preprocess_args;
pub mod run;
pub mod transform;

/// Sets the size of the global rayon pool (default: all cores). Results do
/// not depend on it.
pub fn init_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))?;
    }
    Ok(())
}
