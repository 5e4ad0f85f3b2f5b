use std::path::PathBuf;

/// Errors raised while importing or exporting an ONNX model. Each names the file, node,
/// attribute, tensor or input concerned, and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// Reading the model or an external data file failed; `fs-err` puts the
    /// path in the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// The bytes do not decode as a `ModelProto` (truncated or not ONNX).
    #[error("`{source_name}` is not a valid ONNX model (protobuf decoding failed: {reason})")]
    InvalidModel {
        source_name: String,
        reason: prost::DecodeError,
    },

    /// A structural problem with the model as a whole.
    #[error("`{source_name}`: {message}")]
    Model {
        source_name: String,
        message: String,
    },

    /// The default-domain opset is missing or outside the handled range.
    #[error(
        "the model imports ONNX opset {version}; qtune handles opsets {min} to {max}",
        min = crate::MIN_OPSET,
        max = crate::MAX_OPSET
    )]
    UnsupportedOpset { version: i64 },

    #[error(
        "node '{node}' has op type '{op_type}' from domain '{domain}'; qtune supports only the default ONNX domain"
    )]
    UnsupportedDomain {
        node: String,
        op_type: String,
        domain: String,
    },

    #[error(
        "node '{node}' has op type '{op_type}', which qtune does not support; supported: {supported}"
    )]
    UnsupportedOp {
        node: String,
        op_type: String,
        supported: String,
    },

    /// An attribute is missing, of the wrong type, or has a value qtune
    /// cannot run.
    #[error("node {node} ({op_type}), attribute '{attribute}': {message}")]
    Attribute {
        node: String,
        op_type: String,
        attribute: String,
        message: String,
    },

    /// A node is malformed or uses a feature qtune cannot run (input count,
    /// consumed optional outputs, ...).
    #[error("node {node} ({op_type}): {message}")]
    Node {
        node: String,
        op_type: String,
        message: String,
    },

    #[error("input '{input}' has a dynamic dimension (dim {dim} = '{param}'); give --input_shapes")]
    DynamicInput {
        input: String,
        dim: usize,
        /// The symbolic name, or `?` when the dimension is missing entirely.
        param: String,
    },

    /// `--input_shapes` does not fit the model's inputs.
    #[error("--input_shapes: {message}")]
    InputShapes { message: String },

    /// A tensor or value has an element type qtune cannot hold.
    #[error("tensor '{tensor}' has element type {dtype}, which qtune does not support{context}")]
    UnsupportedDType {
        tensor: String,
        dtype: String,
        /// Extra words such as " (graph input)"; empty when none.
        context: String,
    },

    /// A tensor's stored data does not match its type and dimensions.
    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },

    /// External tensor data cannot be located or read.
    #[error("tensor '{tensor}' stores its data in external file `{}`: {message}", file.display())]
    ExternalData {
        tensor: String,
        file: PathBuf,
        message: String,
    },

    /// A node cannot be written in the export opset (an attribute value
    /// the opset cannot express, a non-constant input that must become an
    /// attribute, ...).
    #[error("cannot export node {node} ({op_type}) to ONNX opset {opset}: {message}", opset = crate::EXPORT_OPSET)]
    ExportNode {
        node: String,
        op_type: String,
        message: String,
    },

    /// The graph as a whole cannot be exported.
    #[error("cannot export the graph to ONNX: {message}")]
    Export { message: String },

    /// Writing the exported model failed.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The imported graph failed an IR check.
    #[error(transparent)]
    Ir(#[from] qtune_ir::IrError),
}
