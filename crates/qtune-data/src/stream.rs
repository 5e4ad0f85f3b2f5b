//! Parallel, bounded, order-preserving decode + preprocess of many files.

use std::collections::VecDeque;
use std::path::PathBuf;

use qtune_tensor::Tensor;
use rayon::prelude::*;

use crate::config::PreprocessConfig;
use crate::decode::load_image_as;
use crate::error::DataError;
use crate::preprocess::{layout_for, preprocess};

/// Decodes and preprocesses `paths` on a private pool of `threads` threads,
/// yielding results in the order of `paths`.
///
/// Work proceeds in chunks of `2 * threads` files: a chunk is decoded in
/// parallel, then handed out one by one, so at most one chunk of tensors
/// (and `threads` decoded images) is alive at a time. Results do not depend
/// on `threads`. `threads = 0` means one thread per available CPU.
///
/// A file that fails yields an `Err` naming it; later files are still
/// processed.
pub fn preprocess_files<'a>(
    paths: &'a [PathBuf],
    cfg: &'a PreprocessConfig,
    threads: usize,
) -> Result<PreprocessFiles<'a>, DataError> {
    cfg.validate()?;
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("qtune-data-{i}"))
        .build()
        .map_err(|e| DataError::ThreadPool {
            threads,
            message: e.to_string(),
        })?;
    Ok(PreprocessFiles {
        paths,
        cfg,
        pool,
        chunk: 2 * threads,
        next: 0,
        ready: VecDeque::new(),
    })
}

/// Iterator returned by [`preprocess_files`].
pub struct PreprocessFiles<'a> {
    paths: &'a [PathBuf],
    cfg: &'a PreprocessConfig,
    pool: rayon::ThreadPool,
    chunk: usize,
    next: usize,
    ready: VecDeque<Result<(PathBuf, Tensor), DataError>>,
}

/// Reads and preprocesses one file; every error names the file.
pub fn preprocess_file(
    path: &std::path::Path,
    cfg: &PreprocessConfig,
) -> Result<Tensor, DataError> {
    let img = load_image_as(path, layout_for(cfg.pixel_format))?;
    preprocess(&img, cfg).map_err(|e| e.in_file(path))
}

impl Iterator for PreprocessFiles<'_> {
    type Item = Result<(PathBuf, Tensor), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() && self.next < self.paths.len() {
            let end = (self.next + self.chunk).min(self.paths.len());
            let batch = &self.paths[self.next..end];
            let cfg = self.cfg;
            // `collect` on an indexed parallel iterator keeps the input order.
            let results: Vec<_> = self.pool.install(|| {
                batch
                    .par_iter()
                    .map(|p| preprocess_file(p, cfg).map(|t| (p.clone(), t)))
                    .collect()
            });
            self.ready.extend(results);
            self.next = end;
        }
        self.ready.pop_front()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.ready.len() + self.paths.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for PreprocessFiles<'_> {}
