//! Loading a model file (`.onnx` or Top-dialect `.mlir`) into an executor,
//! and matching named arrays to graph inputs.

use std::path::Path;

use anyhow::Context;

use crate::{Error, Result, bail};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_ir::ValueId;
use qtune_ir::mlir::{
    InputAttrs, MlirWriteOptions, read_top_mlir, read_top_mlir_file, write_top_mlir,
};
use qtune_onnx::ImportOptions;
use qtune_tensor::Tensor;

/// Parses TPU-MLIR's `--input_shapes` form: `[[1,3,224,224],[1,128]]`
/// (also accepts a single `[1,3,224,224]`).
pub fn parse_input_shapes(s: &str) -> Result<Vec<Vec<usize>>> {
    let bad = |message: String| Error::setting("input_shapes", message);
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| {
            bad(format!(
                "--input_shapes `{s}`: expected a form like [[1,3,224,224]]"
            ))
        })?;
    let groups: Vec<&str> = if inner.starts_with('[') {
        inner
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .map(|t| t.split("],[").collect())
            .ok_or_else(|| bad(format!("--input_shapes `{s}`: unbalanced brackets")))?
    } else {
        vec![inner]
    };
    groups
        .iter()
        .map(|g| {
            g.split(',')
                .map(|d| {
                    d.parse::<usize>().map_err(|e| {
                        bad(format!(
                            "--input_shapes `{s}`: `{d}` is not a dimension: {e}"
                        ))
                    })
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
    /// The graph's input and output names as the source ONNX model has
    /// them (see [`OnnxIoNames`]).
    pub onnx_io: OnnxIoNames,
}

/// The graph input and output names of the source ONNX model, in graph
/// order: what ONNX Runtime feeds and fetches by. Exact for a `.onnx` file;
/// for a `.mlir` the outputs are derived from TPU-MLIR's op names
/// (`<output>_<OnnxOpType>`, [`qtune_deploy::onnx_name_of`]) and the inputs
/// are the `top.Input` names, which TPU-MLIR takes from the ONNX inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnnxIoNames {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl OnnxIoNames {
    fn of_onnx(graph: &qtune_ir::Graph) -> Self {
        let names = |ids: &[ValueId]| ids.iter().map(|&v| graph.value(v).name.clone()).collect();
        OnnxIoNames {
            inputs: names(&graph.inputs),
            outputs: names(&graph.outputs),
        }
    }

    fn of_top(graph: &qtune_ir::Graph) -> Self {
        OnnxIoNames {
            inputs: graph
                .inputs
                .iter()
                .map(|&v| graph.value(v).name.clone())
                .collect(),
            outputs: graph
                .outputs
                .iter()
                .map(|&v| qtune_deploy::onnx_name_of(&graph.value(v).name).to_string())
                .collect(),
        }
    }
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
    let mut onnx_io = None;
    let (graph, input_attrs) = match ext.as_str() {
        "onnx" => {
            let graph = import_onnx_named(path, &opts)?;
            onnx_io = Some(OnnxIoNames::of_onnx(&graph));
            if naming == Naming::TopOps {
                let graph = canonical_top_graph(graph, path)?;
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
    // A QDQ model (e.g. model_deploy's output) runs its int8 layers on
    // integers, as the quantized-model simulation does. Its `Conv -> Relu
    // -> QuantizeLinear` chains become fused Conv+Relu first, so that the
    // requantization clamps the activation as the simulation and ONNX
    // Runtime's integer kernels do (clamping the float value and then
    // quantizing rounds differently).
    let graph = if graph
        .nodes()
        .any(|(_, n)| matches!(n.op, qtune_ir::Op::DequantizeLinear { .. }))
    {
        let mut graph = graph;
        qtune_ir::passes::fuse_relus(&mut graph);
        qtune_deploy::integer_exact(&graph)
    } else {
        graph
    };
    let onnx_io = onnx_io.unwrap_or_else(|| OnnxIoNames::of_top(&graph));
    let graph = prepare_graph(graph, prepare, path)?;
    let exec = Executor::new(graph).with_context(|| format!("model `{}`", path.display()))?;
    Ok(LoadedModel {
        exec,
        input_attrs,
        onnx_io,
    })
}

/// TPU-MLIR's canonical Top graph of an imported ONNX model, as
/// `model_transform` writes it (`qtune_exec::prepare_top`).
pub fn canonical_top_graph(graph: qtune_ir::Graph, path: &Path) -> Result<qtune_ir::Graph> {
    let (graph, _) =
        qtune_exec::prepare_top(graph).with_context(|| format!("model `{}`", path.display()))?;
    Ok(graph)
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

/// The executor of a quantized graph (weights' DequantizeLinear folded).
pub fn executor_of(qdq: &qtune_ir::Graph, path: &Path) -> Result<Executor> {
    let (graph, _) = qtune_exec::prepare(qdq.clone(), &PrepareOptions::default())
        .with_context(|| format!("quantized model of `{}`", path.display()))?;
    Ok(Executor::new(graph).with_context(|| format!("quantized model of `{}`", path.display()))?)
}

/// [`qtune_onnx::import_onnx`] with every error naming the model file
/// (the importer names the file for file-level errors, and the tensor or
/// node for the others).
pub fn import_onnx_named(path: &Path, opts: &qtune_onnx::ImportOptions) -> Result<qtune_ir::Graph> {
    qtune_onnx::import_onnx(path, opts).map_err(|e| {
        let shown = path.display().to_string();
        if e.to_string().contains(&shown) {
            Error::from(anyhow::Error::new(e))
        } else {
            Error::from(anyhow::Error::new(e).context(format!("model `{shown}`")))
        }
    })
}

/// Runs `exec` on named arrays (keyed by graph input name; an array may
/// stack several samples on axis 0, which run one by one) and returns the
/// tensors by name with the samples stacked again on axis 0: the graph
/// outputs, in graph order, or with `all` the graph inputs and every node
/// output, in graph order. `source` names the arrays in errors. Also
/// returns the number of samples run.
pub fn run_arrays(
    exec: &Executor,
    arrays: &[(String, Tensor)],
    source: &str,
    all: bool,
) -> Result<(Vec<(String, Tensor)>, usize)> {
    let samples = samples_from_arrays(exec, arrays, source)?;
    let keep = if all { Keep::All } else { Keep::Outputs };
    let mut results = exec.run_samples(samples, &keep, |_| NoHook)?;
    let g = exec.graph();
    let ids: Vec<ValueId> = if all {
        let mut ids = g.inputs.clone();
        for (_, n) in g.nodes() {
            ids.extend(n.outputs.iter().copied());
        }
        ids
    } else {
        g.outputs.clone()
    };
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(ids.len());
    for id in ids {
        let name = g.value(id).name.clone();
        // `take` hands each buffer over without a copy; a tensor listed
        // twice (an output named twice) is cloned from the first.
        let mut parts = Vec::with_capacity(results.len());
        for (values, _) in &mut results {
            let t = match values.take(id) {
                Some(t) => t,
                None => out
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| Error::Internal {
                        message: format!("tensor `{name}` was not computed"),
                    })?,
            };
            parts.push(t);
        }
        let t = if parts.len() == 1 {
            parts.pop().unwrap_or_else(|| unreachable!())
        } else {
            Tensor::concat_outer(&parts)?
        };
        out.push((name, t));
    }
    Ok((out, results.len()))
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
