//! Loading a model file into an executor, and matching npz arrays to graph
//! inputs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use qtune_exec::{Executor, PrepareOptions};
use qtune_ir::ValueId;
use qtune_ir::mlir::{
    InputAttrs, MlirWriteOptions, read_top_mlir, read_top_mlir_file, write_top_mlir,
};
use qtune_onnx::ImportOptions;
use qtune_tensor::Tensor;

/// Parses TPU-MLIR's `--input_shapes` form: `[[1,3,224,224],[1,128]]`
/// (also accepts a single `[1,3,224,224]`).
pub fn parse_input_shapes(s: &str) -> Result<Vec<Vec<usize>>> {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .with_context(|| format!("--input_shapes `{s}`: expected a form like [[1,3,224,224]]"))?;
    let groups: Vec<&str> = if inner.starts_with('[') {
        inner
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .map(|t| t.split("],[").collect())
            .with_context(|| format!("--input_shapes `{s}`: unbalanced brackets"))?
    } else {
        vec![inner]
    };
    groups
        .iter()
        .map(|g| {
            g.split(',')
                .map(|d| {
                    d.parse::<usize>()
                        .with_context(|| format!("--input_shapes `{s}`: `{d}` is not a dimension"))
                })
                .collect()
        })
        .collect()
}

/// Imports and prepares a model (`.onnx` or Top-dialect `.mlir`); tensors
/// keep the names of the file (ONNX tensor names, or .mlir op names).
pub fn load(path: &Path, input_shapes: Option<&str>) -> Result<Executor> {
    load_with(path, input_shapes, &PrepareOptions::default())
}

/// Imports and prepares a model with explicit preparation options.
pub fn load_with(
    path: &Path,
    input_shapes: Option<&str>,
    prepare: &PrepareOptions,
) -> Result<Executor> {
    Ok(load_model(path, input_shapes, prepare, Naming::AsInFile)?.exec)
}

/// How the tensors of a loaded model are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// As in the file: ONNX tensor names, or the op names of a .mlir.
    AsInFile,
    /// TPU-MLIR op names (`<first output>_<OpType>`) for both file kinds, as
    /// calibration tables and qtables need. An ONNX model goes through the
    /// same .mlir writer and reader as `model_transform`.
    TopOps,
}

/// A prepared model and what its file says about input preprocessing.
pub struct LoadedModel {
    pub exec: Executor,
    /// `top.Input` attributes per graph input (empty for ONNX files).
    pub input_attrs: Vec<InputAttrs>,
}

/// Imports a model file into an executor; see [`Naming`].
pub fn load_model(
    path: &Path,
    input_shapes: Option<&str>,
    prepare: &PrepareOptions,
    naming: Naming,
) -> Result<LoadedModel> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut opts = ImportOptions::default();
    if let Some(s) = input_shapes {
        opts = ImportOptions::with_input_shapes(parse_input_shapes(s)?);
    }
    let (graph, input_attrs) = match ext.as_str() {
        "onnx" => {
            let graph = qtune_onnx::import_onnx(path, &opts)?;
            if naming == Naming::TopOps {
                let graph = prepare_graph(graph, &PrepareOptions::default(), path)?;
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (text, weights) = write_top_mlir(&graph, &MlirWriteOptions::new(stem))?;
                let (g, _) = read_top_mlir(&text, &weights, &path.display().to_string())?;
                (g, Vec::new())
            } else {
                (graph, Vec::new())
            }
        }
        "mlir" => {
            if input_shapes.is_some() {
                bail!(
                    "--input_shapes applies to .onnx models; `{}` already has static shapes",
                    path.display()
                );
            }
            read_top_mlir_file(path)?
        }
        _ => bail!(
            "model `{}`: unknown model format (expected .onnx or .mlir)",
            path.display()
        ),
    };
    let graph = prepare_graph(graph, prepare, path)?;
    let exec = Executor::new(graph).with_context(|| format!("model `{}`", path.display()))?;
    Ok(LoadedModel { exec, input_attrs })
}

fn prepare_graph(
    graph: qtune_ir::Graph,
    opts: &PrepareOptions,
    path: &Path,
) -> Result<qtune_ir::Graph> {
    let (graph, _) =
        qtune_exec::prepare(graph, opts).with_context(|| format!("model `{}`", path.display()))?;
    Ok(graph)
}

/// Splits npz arrays into per-sample graph inputs. An array may hold
/// several samples stacked on axis 0 (shape `[k * n, ...]` for an input of
/// shape `[n, ...]`); every input must hold the same number of samples.
pub fn samples_from_arrays(
    exec: &Executor,
    arrays: &[(String, Tensor)],
    source: &str,
) -> Result<Vec<Vec<(ValueId, Tensor)>>> {
    let g = exec.graph();
    let mut per_input = Vec::new();
    let mut count = None;
    for &id in &g.inputs {
        let v = g.value(id);
        let expected = g.shape_of(id)?;
        let Some((_, t)) = arrays.iter().find(|(n, _)| *n == v.name) else {
            let have: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{source} has no array for graph input `{}` (it has: {})",
                v.name,
                have.join(", ")
            );
        };
        if t.dtype() != v.dtype {
            bail!(
                "{source}, array `{}`: expected {} data, got {}",
                v.name,
                v.dtype,
                t.dtype()
            );
        }
        let (ed, td) = (expected.dims(), t.dims());
        let k = if td == ed {
            1
        } else if !ed.is_empty()
            && td.len() == ed.len()
            && td[1..] == ed[1..]
            && ed[0] > 0
            && td[0] % ed[0] == 0
            && td[0] > 0
        {
            td[0] / ed[0]
        } else {
            bail!(
                "{source}, array `{}`: expected shape {expected} (or a multiple of it along axis 0), got {}",
                v.name,
                t.shape()
            );
        };
        if *count.get_or_insert(k) != k {
            bail!(
                "{source}: arrays hold different numbers of samples ({} for `{}`)",
                k,
                v.name
            );
        }
        per_input.push((id, t.clone(), ed.first().copied().unwrap_or(1)));
    }
    let count = count.unwrap_or(1);
    (0..count)
        .map(|s| {
            per_input
                .iter()
                .map(|(id, t, n)| {
                    let part = if count == 1 {
                        t.clone()
                    } else {
                        t.slice_outer(s * n, (s + 1) * n)?
                    };
                    Ok((*id, part))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes_forms() {
        assert_eq!(
            parse_input_shapes("[[1,3,224,224]]").unwrap(),
            vec![vec![1, 3, 224, 224]]
        );
        assert_eq!(
            parse_input_shapes("[[1,128], [1,128]]").unwrap(),
            vec![vec![1, 128], vec![1, 128]]
        );
        assert_eq!(parse_input_shapes("[1,3]").unwrap(), vec![vec![1, 3]]);
        assert!(parse_input_shapes("1,3").is_err());
        assert!(
            parse_input_shapes("[[1,x]]")
                .unwrap_err()
                .to_string()
                .contains("`x`")
        );
    }
}
