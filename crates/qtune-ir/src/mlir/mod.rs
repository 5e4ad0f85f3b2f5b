//! The Top-dialect `.mlir` text that TPU-MLIR's `model_transform` writes:
//! a writer ([`write_top_mlir`]) and a reader ([`read_top_mlir`]).
//!
//! # Format
//!
//! MLIR generic form, as TPU-MLIR prints it with debug info: a `module` with
//! the `module.*` attributes, one `func.func @main`, a `top.None` op first,
//! one `top.Input` per graph input, `top.Weight` ops for constants (their
//! data lives in the weight npz, keyed by the weight's loc name), and one
//! Top op per IR node. Locations are `#locN` aliases defined after the
//! module. See `../shared/reference/tpu-mlir-quant-spec.md` section 5.
//! Each Top op's mapping is its op family's (`crate::families`: the
//! `read_top` and `write_top` of the op's module); the reader and writer
//! here handle the module, the inputs, the weights, names and types.
//!
//! # Naming contract
//!
//! * Op names are TPU-MLIR's: `<first output tensor>_<ONNX op type>`, as its
//!   `OnnxConverter` names them (`474_Conv`), and after canonicalization a
//!   fused op keeps the name of the op it replaced (Conv + Relu is named
//!   after the Relu). Graph inputs use the input name; weights use the
//!   constant's tensor name. Multi-result ops (Split) get
//!   `loc(fused["<out0>_Split", "<out1>_Split"])`. Names are made unique
//!   with a `_<n>` suffix when two would collide.
//! * The reader names every value by its op's loc: calibration tables and
//!   qtables written against a `.mlir` use these names.
//! * The writer takes each op's loc from its output's name: run
//!   `passes::name_as_top_ops` (or `passes::canonicalize`) on a graph with
//!   ONNX tensor names first.
//! * A TPU-MLIR op with `do_relu = true` stays one op: the IR node carries
//!   the fused Relu (`Node::relu`, with `relu_limit` when positive), and its
//!   one output is named by the loc, as TPU-MLIR's tools see it. `top.SiLU`,
//!   `top.GELU`, `top.LayerNorm`, `top.AddConst` / `top.SubConst` /
//!   `top.MulConst` and a `top.MatMul` with a bias are one IR op each too.
//!
//! # Types
//!
//! Every result is a ranked tensor with its real element type: `f32`, `i64`,
//! `i32`, `i1` (bool), `ui8`, `si8`. TPU-MLIR's Top dialect is mostly f32;
//! keeping integer types lets graphs with integer paths (token ids,
//! attention masks) round-trip exactly. Weights are always stored as float32
//! in the npz, as TPU-MLIR does; the `top.Weight` result type records the
//! original element type, and the reader converts back (the writer refuses
//! integers that float32 cannot hold exactly).

mod attr;
pub mod ops;
mod parse;
pub(crate) mod reader;
pub(crate) mod writer;

use std::path::PathBuf;

pub use attr::{MlirAttr, format_f64};
pub use reader::{read_top_mlir, read_top_mlir_file};
pub use writer::{top_op_type, write_top_mlir};

use qtune_tensor::DType;

/// Preprocessing attributes of one `top.Input` op, in the order they print
/// (the printer sorts them anyway).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InputAttrs {
    /// The graph input's name.
    pub name: String,
    pub attrs: Vec<(String, MlirAttr)>,
}

/// Options of [`write_top_mlir`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MlirWriteOptions {
    pub model_name: String,
    /// `module.weight_file`; see [`MlirWriteOptions::new`].
    pub weight_file: String,
    /// `module.platform`: ONNX, TORCH, ...
    pub platform: String,
    /// `module.chip`; `ALL` before deployment.
    pub chip: String,
    /// Preprocessing attributes per graph input; inputs not listed get none.
    pub input_attrs: Vec<InputAttrs>,
}

impl MlirWriteOptions {
    /// Options for an ONNX model, with the weight file named
    /// `<model_name lowercased>_top_f32_all_weight.npz` as `model_transform`
    /// does.
    pub fn new(model_name: impl Into<String>) -> Self {
        let model_name = model_name.into();
        MlirWriteOptions {
            weight_file: format!("{}_top_f32_all_weight.npz", model_name.to_lowercase()),
            model_name,
            platform: "ONNX".to_string(),
            chip: "ALL".to_string(),
            input_attrs: Vec::new(),
        }
    }
}

impl Default for MlirWriteOptions {
    fn default() -> Self {
        MlirWriteOptions::new("model")
    }
}

/// Errors of the `.mlir` reader and writer.
#[derive(Debug, thiserror::Error)]
pub enum MlirError {
    /// Syntax or content error at a line of the text.
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    /// The writer cannot express a node.
    #[error("node `{node}` ({op}): {message}")]
    Unsupported {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("value `{name}`: {message}")]
    Value { name: String, message: String },
    #[error("reading `{path}`: {message}")]
    Io { path: PathBuf, message: String },
}

/// The MLIR element type name of a dtype.
pub(crate) fn element_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::Bool => "i1",
        DType::U8 => "ui8",
        DType::I8 => "si8",
    }
}

/// The dtype of an MLIR element type name (signless and signed spellings).
pub(crate) fn dtype_of_element(s: &str) -> Option<DType> {
    Some(match s {
        "f32" => DType::F32,
        "i64" | "si64" => DType::I64,
        "i32" | "si32" => DType::I32,
        "i1" => DType::Bool,
        "ui8" => DType::U8,
        "i8" | "si8" => DType::I8,
        _ => return None,
    })
}

/// `tensor<1x3xf32>`, `tensor<f32>` for rank 0.
pub(crate) fn tensor_type(dims: &[usize], d: DType) -> String {
    let mut s = String::from("tensor<");
    for x in dims {
        s.push_str(&x.to_string());
        s.push('x');
    }
    s.push_str(element_type(d));
    s.push('>');
    s
}

/// The `Cast` `to` attribute spelling.
pub(crate) fn dtype_name(d: DType) -> &'static str {
    d.name()
}

pub(crate) fn dtype_of_name(s: &str) -> Option<DType> {
    Some(match s {
        "float32" | "F32" | "f32" => DType::F32,
        "int64" | "INT64" | "i64" => DType::I64,
        "int32" | "INT32" | "i32" => DType::I32,
        "bool" | "BOOL" | "i1" => DType::Bool,
        "uint8" | "UINT8" | "ui8" => DType::U8,
        "int8" | "INT8" | "si8" | "i8" => DType::I8,
        _ => return None,
    })
}
