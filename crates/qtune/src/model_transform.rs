//! TPU-MLIR's `model_transform`: import an ONNX model, write its Top-dialect
//! `.mlir` and weight npz, and with a test input run the written model and
//! check it against the source model.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_ir::mlir::{InputAttrs, MlirWriteOptions, read_top_mlir_file, write_top_mlir};
use qtune_ir::{Graph, passes};
use qtune_onnx::ImportOptions;
use qtune_tensor::compare::{Tolerance, compare_tensors};
use qtune_tensor::{Tensor, read_npz, write_atomic, write_npz};

use crate::model;
use crate::{Error, Preprocess, Reporter, Result};

/// Everything one `model_transform` run needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransformSettings {
    /// Names the weight file `<name>_top_f32_all_weight.npz` and the test
    /// files (`--model_name`).
    pub model_name: String,
    /// The source model (`.onnx`, `--model_def`).
    pub model_def: PathBuf,
    /// The `.mlir` written.
    pub mlir: PathBuf,
    /// Input shapes, e.g. `[[1,3,224,224]]` (required for dynamic
    /// dimensions).
    pub input_shapes: Option<String>,
    /// Image preprocessing, recorded on the image inputs.
    pub preprocess: Preprocess,
    /// Comma-separated tensor names at which to cut the graph.
    pub output_names: Option<String>,
    /// An image, `.npz` (keyed by input name) or `.npy` to validate with;
    /// its arrays are written to `<model_name>_in_f32.npz`.
    pub test_input: Option<PathBuf>,
    /// Where to write every tensor of the validation run, keyed by op name.
    pub test_result: Option<PathBuf>,
    /// Minimum `cos,euclid` similarity of the `.mlir` outputs to the
    /// source model's.
    pub tolerance: String,
    /// Output names left out of the validation.
    pub excepts: Vec<String>,
}

impl TransformSettings {
    pub fn new(
        model_name: impl Into<String>,
        model_def: impl Into<PathBuf>,
        mlir: impl Into<PathBuf>,
    ) -> Self {
        TransformSettings {
            model_name: model_name.into(),
            model_def: model_def.into(),
            mlir: mlir.into(),
            input_shapes: None,
            preprocess: Preprocess::default(),
            output_names: None,
            test_input: None,
            test_result: None,
            tolerance: "0.99,0.99".to_string(),
            excepts: Vec::new(),
        }
    }
}

/// True for inputs TPU-MLIR treats as images: 4-D with at most 4 channels
/// (axis 1 for nchw, last for nhwc), or 3-D.
fn is_image_input(shape: &[usize], nhwc: bool) -> bool {
    match shape.len() {
        4 => (if nhwc { shape[3] } else { shape[1] }) <= 4,
        3 => true,
        _ => false,
    }
}

/// Runs `model_transform`: writes the `.mlir` and its weights, and with a
/// test input the validation files; an output below the tolerance is
/// [`Error::CheckFailed`]. The files written and the validation are said
/// as the reporter's notes.
pub fn model_transform(args: &TransformSettings, reporter: &dyn Reporter) -> Result<()> {
    Ok(run(args, reporter)?)
}

fn run(args: &TransformSettings, reporter: &dyn Reporter) -> anyhow::Result<()> {
    if args.mlir.extension().and_then(|e| e.to_str()) != Some("mlir") {
        bail!("--mlir `{}` must end in .mlir", args.mlir.display());
    }
    let ext = args
        .model_def
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "onnx" {
        bail!(
            "--model_def `{}`: only ONNX models are supported (export PyTorch/TFLite/Caffe models to ONNX first)",
            args.model_def.display()
        );
    }
    let mut opts = ImportOptions::default();
    if let Some(s) = &args.input_shapes {
        opts = ImportOptions::with_input_shapes(model::parse_input_shapes(s)?);
    }
    let mut graph = model::import_onnx_named(&args.model_def, &opts)?;
    if let Some(names) = &args.output_names {
        cut_at(&mut graph, names)?;
    }
    let source_outputs: Vec<String> = graph
        .outputs
        .iter()
        .map(|&o| graph.value(o).name.clone())
        .collect();
    let graph = model::canonical_top_graph(graph, &args.model_def)?;

    // Preprocessing attributes of the image inputs.
    let mut input_attrs = Vec::new();
    let mut image_configs = Vec::new();
    for &id in &graph.inputs {
        let shape = graph.shape_of(id)?.dims().to_vec();
        let nhwc = args.preprocess.is_nhwc();
        if is_image_input(&shape, nhwc) && shape.len() == 4 {
            let cfg = args
                .preprocess
                .config(&shape)
                .with_context(|| format!("input `{}`", graph.value(id).name))?;
            input_attrs.push(InputAttrs {
                name: graph.value(id).name.clone(),
                attrs: args.preprocess.input_attrs(&cfg)?,
            });
            image_configs.push(Some(cfg));
        } else {
            image_configs.push(None);
        }
    }

    let mut wopts = MlirWriteOptions::new(args.model_name.clone());
    wopts.input_attrs = input_attrs;
    let (text, weights) = write_top_mlir(&graph, &wopts)?;
    let dir = args
        .mlir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let weight_path = dir.join(&wopts.weight_file);
    write_npz(&weight_path, &weights)?;
    write_atomic(&args.mlir, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })
    .with_context(|| format!("cannot write `{}`", args.mlir.display()))?;
    reporter.note(&format!(
        "wrote {} ({} ops) and {} ({} weights)",
        args.mlir.display(),
        graph.node_count(),
        weight_path.display(),
        weights.len()
    ));

    if let Some(test_input) = &args.test_input {
        let source = Executor::new(graph)?;
        let inputs = test_inputs(&source, test_input, &image_configs)?;
        let in_path = PathBuf::from(format!("{}_in_f32.npz", args.model_name));
        let named: Vec<(String, Tensor)> = inputs
            .iter()
            .map(|(id, t)| (source.graph().value(*id).name.clone(), t.clone()))
            .collect();
        write_npz(&in_path, &named)?;
        // Run the .mlir just written (read back from disk) and the source graph.
        let (top_graph, _) = read_top_mlir_file(&args.mlir)?;
        let (top, _) = Executor::from_graph(top_graph, &PrepareOptions::default())?;
        let top_inputs =
            model::samples_from_arrays(&top, &named, &format!("`{}`", in_path.display()))?;
        let mut top_run = top.run_samples(top_inputs, &Keep::All, |_| NoHook)?;
        let (top_values, _) = top_run.pop().context("no result")?;
        let src_values = source
            .run_samples(vec![inputs], &Keep::Outputs, |_| NoHook)?
            .pop()
            .context("no result")?
            .0;
        if let Some(result) = &args.test_result {
            let mut all: Vec<(String, Tensor)> = Vec::new();
            for (id, t) in top_values.iter() {
                if top.graph().value(id).constant.is_none() {
                    all.push((top.graph().value(id).name.clone(), t.clone()));
                }
            }
            write_npz(result, &all)?;
            reporter.note(&format!(
                "wrote {} ({} tensors)",
                result.display(),
                all.len()
            ));
        }
        validate(
            &source,
            &src_values,
            &top,
            &top_values,
            &source_outputs,
            args,
            reporter,
        )?;
    }
    Ok(())
}

/// Makes the named tensors the graph outputs and drops what no longer
/// reaches them.
fn cut_at(graph: &mut Graph, names: &str) -> anyhow::Result<()> {
    let mut outputs = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let id = graph
            .find_value(name)
            .with_context(|| format!("--output_names: the model has no tensor named `{name}`"))?;
        if graph.value(id).constant.is_some() || graph.inputs.contains(&id) {
            bail!("--output_names: `{name}` is a constant or graph input, not a computed tensor");
        }
        outputs.push(id);
    }
    if outputs.is_empty() {
        bail!("--output_names is empty");
    }
    graph.outputs = outputs;
    passes::remove_dead_nodes(graph);
    Ok(())
}

fn test_inputs(
    exec: &Executor,
    path: &Path,
    configs: &[Option<qtune_data::PreprocessConfig>],
) -> anyhow::Result<Vec<(qtune_ir::ValueId, Tensor)>> {
    let g = exec.graph();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "npz" => {
            let arrays = read_npz(path)?;
            let mut samples = model::samples_from_arrays(
                exec,
                &arrays,
                &format!("--test_input `{}`", path.display()),
            )?;
            if samples.len() != 1 {
                bail!(
                    "--test_input `{}` holds {} samples; give one",
                    path.display(),
                    samples.len()
                );
            }
            Ok(samples.remove(0))
        }
        "jpg" | "jpeg" | "png" | "bmp" | "jfif" => {
            if g.inputs.len() != 1 {
                bail!(
                    "--test_input `{}`: an image can feed a one-input model only; give an npz for {} inputs",
                    path.display(),
                    g.inputs.len()
                );
            }
            let cfg = configs[0].as_ref().with_context(|| {
                format!(
                    "--test_input `{}`: the model input is not an image input",
                    path.display()
                )
            })?;
            let t = qtune_data::preprocess_file(path, cfg)?;
            Ok(vec![(g.inputs[0], t)])
        }
        _ => bail!(
            "--test_input `{}`: expected an image (jpg, png, bmp) or .npz",
            path.display()
        ),
    }
}

fn validate(
    source: &Executor,
    src: &qtune_exec::Values,
    top: &Executor,
    topv: &qtune_exec::Values,
    names: &[String],
    args: &TransformSettings,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let tol = Tolerance::parse(&args.tolerance)
        .map_err(|e| Error::setting("tolerance", format!("--tolerance: {e}")))?;
    let mut failed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if args.excepts.iter().any(|e| e == name) {
            continue;
        }
        let (Some(a), Some(b)) = (
            topv.get(top.graph().outputs[i]),
            src.get(source.graph().outputs[i]),
        ) else {
            bail!("output `{name}` was not computed");
        };
        let c = compare_tensors(a, b, tol);
        let s = c.similarity.map_or_else(String::new, |s| {
            format!("cos {:.6} euclid {:.6}", s.cosine, s.euclidean)
        });
        reporter.note(&format!(
            "output {name} ({}): {} {s}",
            top.graph().value(top.graph().outputs[i]).name,
            c.verdict.name()
        ));
        if !c.verdict.passed() {
            failed.push(name.clone());
        }
    }
    if !failed.is_empty() {
        return Err(Error::CheckFailed {
            message: format!(
                "the .mlir outputs differ from the source model below tolerance {}: {}",
                args.tolerance,
                failed.join(", ")
            ),
        }
        .into());
    }
    Ok(())
}
