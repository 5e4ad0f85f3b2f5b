//! Where calibration samples come from: files (a dataset folder, a data
//! list, npz files) or arrays in memory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use qtune_calibrate::SampleLoader;
use qtune_data::{
    PreprocessConfig, Sample, SampleKind, Selection, select_data_list, select_dataset,
};
use qtune_ir::Graph;
use qtune_tensor::Tensor;

use crate::{Error, Result};

/// The calibration samples.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CalibrationSource {
    /// A folder searched recursively for images, npz or npy files, shuffled
    /// as TPU-MLIR shuffles them (seed 1684): `--dataset`.
    Dataset(PathBuf),
    /// A text file with one sample per line (comma-separated files for
    /// multi-input models): `--data_list`.
    DataList(PathBuf),
    /// npz files, one sample each, in this order (arrays keyed by input
    /// name; a single-input model may use any one key).
    NpzFiles(Vec<PathBuf>),
    /// Samples in memory, in this order: each maps input names to arrays of
    /// the input's shape and type (a single-input model may use any one
    /// key). One sample is one batch.
    Samples(Arc<[BTreeMap<String, Tensor>]>),
}

impl CalibrationSource {
    /// Samples in memory, collected from any iterator (they are all held:
    /// calibration reads them more than once).
    pub fn from_samples(samples: impl IntoIterator<Item = BTreeMap<String, Tensor>>) -> Self {
        CalibrationSource::Samples(samples.into_iter().collect())
    }

    /// How a report names the samples: the folder or data list, or what
    /// was given instead.
    pub fn label(&self) -> String {
        match self {
            CalibrationSource::Dataset(p) | CalibrationSource::DataList(p) => {
                p.display().to_string()
            }
            CalibrationSource::NpzFiles(f) => format!("{} npz file(s)", f.len()),
            CalibrationSource::Samples(s) => format!("{} sample(s) in memory", s.len()),
        }
    }

    /// The first `input_num` samples (0: all) for a model with `inputs`
    /// graph inputs.
    pub fn select(&self, input_num: usize, inputs: usize) -> Result<Selected> {
        let take = |n: usize| if input_num == 0 { n } else { n.min(input_num) };
        Ok(match self {
            CalibrationSource::Dataset(dir) => Selected::Files(select_dataset(dir, input_num)?),
            CalibrationSource::DataList(list) => {
                Selected::Files(select_data_list(list, input_num, inputs)?)
            }
            CalibrationSource::NpzFiles(files) => {
                if let Some(bad) = files
                    .iter()
                    .find(|f| qtune_data::sample_kind(f) != Some(SampleKind::Npz))
                {
                    return Err(Error::setting(
                        "npz_files",
                        format!("`{}`: expected an .npz file", bad.display()),
                    ));
                }
                Selected::Files(Selection {
                    kind: SampleKind::Npz,
                    samples: files[..take(files.len())]
                        .iter()
                        .map(|f| Sample {
                            files: vec![f.clone()],
                        })
                        .collect(),
                })
            }
            CalibrationSource::Samples(samples) => {
                let n = take(samples.len());
                Selected::Memory(if n == samples.len() {
                    Arc::clone(samples)
                } else {
                    samples[..n].iter().cloned().collect()
                })
            }
        })
    }
}

/// Selected samples, ready to make loaders for a model (and for the
/// transformed models made from it).
#[derive(Debug, Clone)]
pub enum Selected {
    Files(Selection),
    Memory(Arc<[BTreeMap<String, Tensor>]>),
}

impl Selected {
    /// Whether the samples are image files (they need preprocessing).
    pub fn is_images(&self) -> bool {
        matches!(self, Selected::Files(s) if s.kind == SampleKind::Image)
    }

    /// A loader of these samples for `graph`'s inputs.
    pub fn loader(
        &self,
        graph: &Graph,
        configs: Vec<Option<PreprocessConfig>>,
    ) -> Result<SampleLoader> {
        Ok(match self {
            Selected::Files(s) => SampleLoader::new(graph, s.clone(), configs)?,
            Selected::Memory(m) => SampleLoader::from_memory(graph, Arc::clone(m))?,
        })
    }
}
