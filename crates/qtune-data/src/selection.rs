//! Which files a calibration or search run reads, with TPU-MLIR's
//! `DataSelector` semantics (../shared/reference/tpu-mlir-quant-spec.md
//! section 2.7), so that the same `--dataset` and `--input_num` choose the
//! same files as TPU-MLIR would:
//!
//! * `--dataset DIR`: every file below `DIR` (recursively) with a recognised
//!   extension, sorted by full path, shuffled by Python's `random.shuffle`
//!   after `random.seed(1684)`, then the first `input_num` (all when 0 or
//!   larger than the count).
//! * `--data_list FILE`: one sample per line, comma-separated files for
//!   multi-input models, the first `input_num` lines (no shuffle).
//!
//! All samples must be of one kind (image, npy or npz).

use std::path::{Path, PathBuf};

use rand_mt::Mt;

use crate::DataError;

/// The seed TPU-MLIR's DataSelector gives Python's `random.seed`.
pub const TPU_MLIR_SEED: u32 = 1684;

/// The kind of a sample file, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Image,
    Npy,
    Npz,
}

/// The kind of a file from its last extension (case-insensitive), as
/// TPU-MLIR recognises them. `.yuv` raw frames are not supported.
pub fn sample_kind(path: &Path) -> Option<SampleKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" | "bmp" | "png" | "jfif" => Some(SampleKind::Image),
        "npy" => Some(SampleKind::Npy),
        "npz" => Some(SampleKind::Npz),
        _ => None,
    }
}

/// One sample: one file per model input (a single npz may hold them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub files: Vec<PathBuf>,
}

/// The samples of a run and their common kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub kind: SampleKind,
    pub samples: Vec<Sample>,
}

/// Python's `random.shuffle` driven by Python's Mersenne Twister seeded
/// with `random.seed(seed)` for a small non-negative integer seed (CPython
/// `init_by_array` with the one 32-bit key word).
pub fn python_shuffle<T>(items: &mut [T], seed: u32) {
    let mut mt = Mt::new_with_key([seed]);
    // CPython _randbelow_with_getrandbits: k = n.bit_length(), draw
    // getrandbits(k) (the top k bits of one 32-bit output) until below n.
    for i in (1..items.len()).rev() {
        let n = u64::try_from(i + 1).unwrap_or(u64::MAX);
        let k = 64 - n.leading_zeros();
        let j = loop {
            let r = u64::from(mt.next_u32() >> (32 - k));
            if r < n {
                break usize::try_from(r).unwrap_or(0);
            }
        };
        items.swap(i, j);
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = fs_err::read_dir(dir).map_err(|e| DataError::Dataset {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::Dataset {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn common_kind(samples: &[Sample], origin: &Path) -> Result<SampleKind, DataError> {
    let mut kind = None;
    for s in samples {
        for f in &s.files {
            let k = sample_kind(f).ok_or_else(|| DataError::Dataset {
                path: origin.to_path_buf(),
                message: format!(
                    "file `{}` is not an image (jpg, jpeg, png, bmp, jfif), npy or npz",
                    f.display()
                ),
            })?;
            if *kind.get_or_insert(k) != k {
                return Err(DataError::Dataset {
                    path: origin.to_path_buf(),
                    message: "samples mix images, npy and npz files; use one kind".to_string(),
                });
            }
        }
    }
    kind.ok_or_else(|| DataError::Dataset {
        path: origin.to_path_buf(),
        message: "no usable file (expected jpg, jpeg, png, bmp, jfif, npy or npz)".to_string(),
    })
}

/// The samples of `--dataset DIR` with `--input_num N` (0 means all).
pub fn select_dataset(dir: &Path, input_num: usize) -> Result<Selection, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Dataset {
            path: dir.to_path_buf(),
            message: "no such folder".to_string(),
        });
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.retain(|f| sample_kind(f).is_some());
    // Python sorts `str(path)`; byte order of the UTF-8 path is the same order.
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    python_shuffle(&mut files, TPU_MLIR_SEED);
    if input_num > 0 && input_num < files.len() {
        files.truncate(input_num);
    }
    let samples: Vec<Sample> = files
        .into_iter()
        .map(|f| Sample { files: vec![f] })
        .collect();
    let kind = common_kind(&samples, dir)?;
    Ok(Selection { kind, samples })
}

/// The samples of `--data_list FILE` with `--input_num N` (0 means all).
/// `inputs` is the model's number of inputs: a line names one file per
/// input, or one npz holding them all. Relative paths are taken as they
/// are (relative to the working directory), as TPU-MLIR does.
pub fn select_data_list(
    list: &Path,
    input_num: usize,
    inputs: usize,
) -> Result<Selection, DataError> {
    let text = fs_err::read_to_string(list).map_err(|e| DataError::Dataset {
        path: list.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let files: Vec<PathBuf> = line.split(',').map(|f| PathBuf::from(f.trim())).collect();
        let single_npz = files.len() == 1 && sample_kind(&files[0]) == Some(SampleKind::Npz);
        if files.len() != inputs && !single_npz {
            return Err(DataError::Dataset {
                path: list.to_path_buf(),
                message: format!(
                    "line {}: {} file(s) for a model with {inputs} input(s) (give one file per input, comma-separated, or one npz)",
                    i + 1,
                    files.len()
                ),
            });
        }
        samples.push(Sample { files });
    }
    if input_num > 0 && input_num < samples.len() {
        samples.truncate(input_num);
    }
    let kind = common_kind(&samples, list)?;
    Ok(Selection { kind, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_matches_cpython() {
        // python3 -c "import random; random.seed(1684); x=list(range(10)); random.shuffle(x); print(x)"
        let mut v: Vec<u32> = (0..10).collect();
        python_shuffle(&mut v, TPU_MLIR_SEED);
        assert_eq!(v, [1, 8, 9, 6, 5, 3, 2, 4, 0, 7]);
        // random.seed(1684); x=list(range(100)); random.shuffle(x); print(x[:8])
        let mut v: Vec<u32> = (0..100).collect();
        python_shuffle(&mut v, TPU_MLIR_SEED);
        assert_eq!(&v[..8], &[55, 78, 59, 96, 93, 23, 12, 10]);
    }

    #[test]
    fn kinds_by_extension() {
        assert_eq!(sample_kind(Path::new("a/B.JPG")), Some(SampleKind::Image));
        assert_eq!(sample_kind(Path::new("x.tar.npz")), Some(SampleKind::Npz));
        assert_eq!(sample_kind(Path::new("x.txt")), None);
    }
}
