//! Loading a model file into an executor, and matching npz arrays to graph
//! inputs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use qtune_exec::{Executor, PrepareOptions};
use qtune_ir::ValueId;
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

/// Imports and prepares a model (`.onnx`).
pub fn load(path: &Path, input_shapes: Option<&str>) -> Result<Executor> {
    load_with(path, input_shapes, &PrepareOptions::default())
}

/// Imports and prepares a model with explicit preparation options.
pub fn load_with(
    path: &Path,
    input_shapes: Option<&str>,
    prepare: &PrepareOptions,
) -> Result<Executor> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut opts = ImportOptions::default();
    if let Some(s) = input_shapes {
        opts = ImportOptions::with_input_shapes(parse_input_shapes(s)?);
    }
    let graph = match ext.as_str() {
        "onnx" => qtune_onnx::import_onnx(path, &opts)?,
        _ => bail!(
            "model `{}`: unknown model format (expected a .onnx file)",
            path.display()
        ),
    };
    let (exec, _) = Executor::from_graph(graph, prepare)
        .with_context(|| format!("model `{}`", path.display()))?;
    Ok(exec)
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
