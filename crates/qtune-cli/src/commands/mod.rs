pub mod bench;
pub mod calibrate;
pub mod classify;
pub mod compare;
pub mod deploy;
pub mod detect;
pub mod export;
pub mod fp_forward;
pub mod info;
pub mod preprocess_args;
pub mod report;
pub mod run;
pub mod search;
pub mod transform;

/// Runs a command inside a rayon pool of `threads` workers (default: all
/// cores). The whole command runs on a pool thread, so the kernels' parallel
/// sections start without a hand-off from an outside thread. Results do not
/// depend on the thread count.
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n.max(1));
    }
    let pool = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start {} threads: {e}", threads.unwrap_or(0)))?;
    pool.install(f)
}
