//! The graph input and output names of the exported QDQ model.
//!
//! Inside qtune a quantized model's tensors carry TPU-MLIR's op names (the
//! keys of calibration tables, qtables and TPU-MLIR's npz files), so an
//! ONNX output `logits` is the value `logits_Gemm`. The QDQ ONNX model is
//! meant to replace the float ONNX model in ONNX Runtime, whose callers feed
//! and fetch by the source model's names: [`rename_io`] gives the exported
//! graph's inputs and outputs those names back.

use qtune_ir::Graph;

use crate::DeployError;

/// The ONNX tensor name that a TPU-MLIR op name stands for. TPU-MLIR's ONNX
/// frontend (`OnnxConverter`) names every op `<output[0]>_<OnnxOpType>`, and
/// its canonicalization names a fused op after its last member, so the op
/// name less its last `_<OpType>` suffix is the ONNX name of the tensor the
/// op computes. A suffix counts as an op type when it is an upper-case
/// letter followed by letters and digits, as every ONNX op type is; a name
/// without one is returned as it is (graph inputs: TPU-MLIR names a
/// `top.Input` after the ONNX input itself).
///
/// qtune's own `.mlir` writer does not add the suffix to a tensor whose name
/// already ends with it (an ONNX output `y_Add` computed by an Add keeps the
/// op name `y_Add`), so for such a tensor this gives `y`: the one case where
/// the name of a qtune-written `.mlir` cannot be inverted.
pub fn onnx_name_of(op_name: &str) -> &str {
    let Some((base, suffix)) = op_name.rsplit_once('_') else {
        return op_name;
    };
    let mut chars = suffix.chars();
    let is_op_type = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric());
    if is_op_type && !base.is_empty() {
        base
    } else {
        op_name
    }
}

/// Names `graph`'s inputs `inputs[i]` and outputs `outputs[i]`, in order. A
/// value already holding one of those names (an internal tensor of the QDQ
/// graph) is renamed aside first, to a name no value uses. Errors when the
/// counts differ from the graph's or when two graph inputs/outputs would
/// share a name.
pub fn rename_io(
    graph: &mut Graph,
    inputs: &[String],
    outputs: &[String],
) -> Result<(), DeployError> {
    if inputs.len() != graph.inputs.len() || outputs.len() != graph.outputs.len() {
        return Err(DeployError::Input(format!(
            "the source model has {} inputs and {} outputs, the quantized graph {} and {}",
            inputs.len(),
            outputs.len(),
            graph.inputs.len(),
            graph.outputs.len()
        )));
    }
    let targets: Vec<(qtune_ir::ValueId, &str)> = graph
        .inputs
        .iter()
        .copied()
        .zip(inputs.iter().map(String::as_str))
        .chain(
            graph
                .outputs
                .iter()
                .copied()
                .zip(outputs.iter().map(String::as_str)),
        )
        .collect();
    for (i, (a, name)) in targets.iter().enumerate() {
        if let Some((b, _)) = targets[..i].iter().find(|(_, n)| n == name)
            && b != a
        {
            return Err(DeployError::Input(format!(
                "two graph inputs/outputs would both be named `{name}`"
            )));
        }
    }
    for &(id, name) in &targets {
        if graph.value(id).name == name {
            continue;
        }
        if let Some(other) = graph.find_value(name)
            && other != id
        {
            // When `other` is itself a graph input or output, it gets its
            // own name later in this loop; moving it aside is harmless.
            let mut k = 1usize;
            let aside = loop {
                let candidate = format!("{name}_{k}");
                if graph.find_value(&candidate).is_none() {
                    break candidate;
                }
                k += 1;
            };
            graph
                .rename_value_exact(other, &aside)
                .map_err(|e| DeployError::Input(e.to_string()))?;
        }
        graph
            .rename_value_exact(id, name)
            .map_err(|e| DeployError::Input(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtune_ir::Op;
    use qtune_tensor::DType;

    #[test]
    fn op_names_back_to_onnx_names() {
        let cases = [
            ("logits_Gemm", "logits"),
            ("sentence_embedding_Div", "sentence_embedding"),
            ("output0_Concat", "output0"),
            ("sigmoid_0.tmp_0_Sigmoid", "sigmoid_0.tmp_0"),
            ("/model.22/Mul_5_output_0_Mul", "/model.22/Mul_5_output_0"),
            ("out_Add_Add", "out_Add"),
            ("input_1", "input_1"),
            ("images", "images"),
            ("x_conv", "x_conv"),
            ("_Relu", "_Relu"),
            ("a_B2", "a"),
        ];
        for (op, want) in cases {
            assert_eq!(onnx_name_of(op), want, "{op}");
        }
    }

    #[test]
    fn renames_io_and_moves_clashing_values_aside() {
        let mut g = Graph::new("g");
        let x = g.add_value("x", DType::F32, None);
        let clash = g.add_value("y", DType::F32, None);
        let out = g.add_value("y_Relu", DType::F32, None);
        g.add_node("r1", Op::Relu, vec![Some(x)], vec![clash]);
        g.add_node("r2", Op::Relu, vec![Some(clash)], vec![out]);
        g.inputs = vec![x];
        g.outputs = vec![out];
        rename_io(&mut g, &["in".to_string()], &["y".to_string()]).unwrap();
        assert_eq!(g.value(x).name, "in");
        assert_eq!(g.value(out).name, "y");
        assert_eq!(g.value(clash).name, "y_1");
        assert_eq!(g.find_value("y"), Some(out));
        assert_eq!(g.find_value("y_1"), Some(clash));
        assert_eq!(g.find_value("x"), None);
        assert!(rename_io(&mut g, &[], &["y".to_string()]).is_err());
    }
}
