//! From selected sample files to the graph inputs of one calibration batch
//! (spec section 2.7, `kld_calibrator.py: load_net_input`).
//!
//! * images: one [`PreprocessConfig`] per model input (from the `top.Input`
//!   attributes of the .mlir). With batch size `B` (dim 0 of the first
//!   input), `B` consecutive samples form one batch and the last batch is
//!   padded by repeating the last sample, as TPU-MLIR does.
//! * npz: a single-input model takes the file's only array (any key) or the
//!   array named like the input; a multi-input model needs every input name
//!   as a key.
//! * npy: the comma fields of a data_list line are zipped with the inputs.
//!
//! Deviation: for npz/npy samples the arrays must already have the input's
//! shape (TPU-MLIR also concatenates `dim 0 = 1` arrays of consecutive files
//! up to the batch size; that matters only for batch > 1 models and is not
//! implemented yet; such data gives a clear error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qtune_data::{PreprocessConfig, SampleKind, Selection, preprocess_file};
use qtune_ir::{Graph, ValueId};
use qtune_tensor::{DType, Shape, Tensor, read_npz};

use crate::PipelineError;

/// One graph input as the loader sees it.
#[derive(Debug, Clone)]
struct InputSpec {
    id: ValueId,
    name: String,
    shape: Shape,
    dtype: DType,
}

/// Loads calibration batches on demand, so that only the batches being
/// processed are in memory.
#[derive(Debug, Clone)]
pub struct SampleLoader {
    inputs: Vec<InputSpec>,
    selection: Selection,
    preprocess: Vec<Option<PreprocessConfig>>,
    batch: usize,
    /// Samples given in memory instead of files (`selection` is then empty):
    /// arrays keyed by input name, matched like an npz file's.
    memory: Option<Arc<[BTreeMap<String, Tensor>]>>,
}

impl SampleLoader {
    /// `preprocess[i]` configures image input `i` (`None` for inputs that
    /// are not images). It is only needed for image samples.
    pub fn new(
        graph: &Graph,
        selection: Selection,
        preprocess: Vec<Option<PreprocessConfig>>,
    ) -> Result<Self, PipelineError> {
        let mut inputs = Vec::with_capacity(graph.inputs.len());
        for &id in &graph.inputs {
            let v = graph.value(id);
            inputs.push(InputSpec {
                id,
                name: v.name.clone(),
                shape: graph.shape_of(id)?.clone(),
                dtype: v.dtype,
            });
        }
        if selection.samples.is_empty() {
            return Err(PipelineError::Settings(
                "there are no calibration samples".to_string(),
            ));
        }
        let batch = if selection.kind == SampleKind::Image {
            inputs
                .first()
                .and_then(|i| i.shape.dims().first().copied())
                .unwrap_or(1)
                .max(1)
        } else {
            1
        };
        if selection.kind == SampleKind::Image {
            for (i, input) in inputs.iter().enumerate() {
                match preprocess.get(i) {
                    Some(Some(cfg)) => cfg.validate()?,
                    _ => {
                        return Err(PipelineError::Settings(format!(
                            "the samples are images, but model input `{}` has no image preprocessing \
                             (for an .onnx model run model_transform first and calibrate its .mlir, \
                             or pass the preprocessing flags; or give npz/npy samples)",
                            input.name
                        )));
                    }
                }
            }
        }
        Ok(SampleLoader {
            inputs,
            selection,
            preprocess,
            batch,
            memory: None,
        })
    }

    /// A loader over samples held in memory: each sample maps input names
    /// to arrays, matched to the graph inputs as an npz file's arrays are
    /// (a single-input model may use any one key). One sample is one batch.
    pub fn from_memory(
        graph: &Graph,
        samples: Arc<[BTreeMap<String, Tensor>]>,
    ) -> Result<Self, PipelineError> {
        let mut loader = SampleLoader::new(
            graph,
            Selection {
                kind: SampleKind::Npz,
                samples: vec![qtune_data::Sample { files: Vec::new() }],
            },
            Vec::new(),
        )?;
        if samples.is_empty() {
            return Err(PipelineError::Settings(
                "there are no calibration samples".to_string(),
            ));
        }
        loader.selection.samples.clear();
        loader.memory = Some(samples);
        Ok(loader)
    }

    /// Number of batches `N` (the table's `# sample number`).
    pub fn batch_count(&self) -> usize {
        self.sample_count().div_ceil(self.batch)
    }

    /// Number of selected sample files (before batching).
    pub fn sample_count(&self) -> usize {
        match &self.memory {
            Some(m) => m.len(),
            None => self.selection.samples.len(),
        }
    }

    /// The graph inputs of batch `index`.
    pub fn load(&self, index: usize) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
        if let Some(memory) = &self.memory {
            return self.load_memory(memory, index);
        }
        match self.selection.kind {
            SampleKind::Image => self.load_images(index),
            SampleKind::Npz => self.load_npz(index),
            SampleKind::Npy => self.load_npy(index),
        }
    }

    fn load_images(&self, index: usize) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
        let samples = &self.selection.samples;
        let last = samples.len() - 1;
        let members: Vec<usize> = (0..self.batch)
            .map(|k| (index * self.batch + k).min(last))
            .collect();
        let mut out = Vec::with_capacity(self.inputs.len());
        for (i, input) in self.inputs.iter().enumerate() {
            let Some(Some(cfg)) = self.preprocess.get(i) else {
                return Err(PipelineError::Settings(format!(
                    "model input `{}` has no image preprocessing",
                    input.name
                )));
            };
            let mut parts = Vec::with_capacity(members.len());
            for &m in &members {
                let files = &samples[m].files;
                // A single path feeds every input (TPU-MLIR repeats it).
                let file = files
                    .get(i)
                    .or_else(|| files.first())
                    .ok_or_else(|| PipelineError::Settings(format!("sample {m} names no file")))?;
                let t = preprocess_file(file, cfg)?;
                parts.push(t);
            }
            let t = if parts.len() == 1 {
                parts.pop().unwrap_or_else(|| unreachable!())
            } else {
                Tensor::concat_outer(&parts)?
            };
            out.push((input.id, fit(t, input, &members_path(samples, &members))?));
        }
        Ok(out)
    }

    fn load_memory(
        &self,
        memory: &[BTreeMap<String, Tensor>],
        index: usize,
    ) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
        let arrays = memory.get(index).ok_or_else(|| {
            PipelineError::Settings(format!(
                "sample {index} asked of {} in-memory sample(s)",
                memory.len()
            ))
        })?;
        let label = PathBuf::from(format!("<in-memory sample {index}>"));
        let mut out = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let t = match arrays.get(&input.name) {
                Some(t) => t.clone(),
                None if self.inputs.len() == 1 && arrays.len() == 1 => arrays
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| unreachable!()),
                None => {
                    let have: Vec<&str> = arrays.keys().map(String::as_str).collect();
                    return Err(PipelineError::Sample {
                        path: label,
                        message: format!(
                            "no array for model input `{}` (the sample has: {})",
                            input.name,
                            have.join(", ")
                        ),
                    });
                }
            };
            out.push((input.id, fit(t, input, &label)?));
        }
        Ok(out)
    }

    fn load_npz(&self, index: usize) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
        let sample = &self.selection.samples[index];
        let path = sample
            .files
            .first()
            .ok_or_else(|| PipelineError::Settings(format!("sample {index} names no file")))?;
        let arrays = read_npz(path)?;
        let mut out = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let found = arrays.iter().find(|(n, _)| *n == input.name);
            let t = match found {
                Some((_, t)) => t.clone(),
                None if self.inputs.len() == 1 && arrays.len() == 1 => arrays[0].1.clone(),
                None => {
                    let have: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(PipelineError::Sample {
                        path: path.clone(),
                        message: format!(
                            "no array for model input `{}` (the file has: {})",
                            input.name,
                            have.join(", ")
                        ),
                    });
                }
            };
            out.push((input.id, fit(t, input, path)?));
        }
        Ok(out)
    }

    fn load_npy(&self, index: usize) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
        let sample = &self.selection.samples[index];
        if sample.files.len() != self.inputs.len() {
            return Err(PipelineError::Settings(format!(
                "sample {index}: {} npy file(s) for a model with {} input(s)",
                sample.files.len(),
                self.inputs.len()
            )));
        }
        let mut out = Vec::with_capacity(self.inputs.len());
        for (input, path) in self.inputs.iter().zip(&sample.files) {
            let t = read_npy(path)?;
            out.push((input.id, fit(t, input, path)?));
        }
        Ok(out)
    }
}

fn members_path(samples: &[qtune_data::Sample], members: &[usize]) -> PathBuf {
    members
        .first()
        .and_then(|&m| samples[m].files.first().cloned())
        .unwrap_or_default()
}

/// Checks dtype and shape against the input; an array with the same number
/// of elements but another shape (e.g. a missing batch axis) is reshaped.
fn fit(t: Tensor, input: &InputSpec, path: &Path) -> Result<Tensor, PipelineError> {
    if t.dtype() != input.dtype {
        return Err(PipelineError::Sample {
            path: path.to_path_buf(),
            message: format!(
                "model input `{}` expects {} data, the sample holds {}",
                input.name,
                input.dtype,
                t.dtype()
            ),
        });
    }
    // A NaN or an infinity in a calibration sample poisons every statistic
    // downstream of it (histograms, thresholds, similarities): refused here,
    // naming the file, rather than found later as a NaN table row.
    if let Ok(v) = t.as_f32()
        && let Some(i) = v.iter().position(|x| !x.is_finite())
    {
        return Err(PipelineError::Sample {
            path: path.to_path_buf(),
            message: format!(
                "model input `{}`: element {i} of the sample is {} (calibration samples must be finite)",
                input.name, v[i]
            ),
        });
    }
    if t.shape() == &input.shape {
        return Ok(t);
    }
    if t.numel() == input.shape.numel() {
        return Ok(t.reshaped(input.shape.clone())?);
    }
    Err(PipelineError::Sample {
        path: path.to_path_buf(),
        message: format!(
            "model input `{}` has shape {}, the sample has shape {}",
            input.name,
            input.shape,
            t.shape()
        ),
    })
}

/// Reads a `.npy` file holding float32, int64 or int32 data (int32 becomes
/// int64, the type of the models' integer inputs). The payload goes through
/// `qtune_tensor::npy_from_bytes`, which checks the header's shape against
/// the bytes present before allocating.
fn read_npy(path: &Path) -> Result<Tensor, PipelineError> {
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let t = qtune_tensor::npy_from_bytes(&bytes).map_err(|e| PipelineError::Sample {
        path: path.to_path_buf(),
        message: format!("cannot read npy: {e}"),
    })?;
    if t.dtype() == DType::I32 {
        let v = t.to_i64_vec()?;
        return Ok(Tensor::from_i64(t.dims().to_vec(), v)?);
    }
    Ok(t)
}
