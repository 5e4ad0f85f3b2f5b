use qtune_ir::IrError;
use qtune_tensor::{DType, Shape, TensorError};

/// Errors of preparing or running a graph. Each names the node or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("node `{node}` ({op}): {message}")]
    Node {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("input `{name}`: expected shape {expected}, got {actual}")]
    InputShape {
        name: String,
        expected: Shape,
        actual: Shape,
    },
    #[error("input `{name}`: expected {expected} data, got {actual}")]
    InputDType {
        name: String,
        expected: DType,
        actual: DType,
    },
    #[error(transparent)]
    Size(#[from] qtune_tensor::SizeError),
    #[error("missing value for graph input `{0}`")]
    MissingInput(String),
    #[error("`{0}` is not a graph input")]
    NotAnInput(String),
    #[error("run mask has {mask} entries, the graph has {nodes} nodes")]
    RunMask { mask: usize, nodes: usize },
    #[error("tensor `{0}` was not kept by this run")]
    NotKept(String),
    #[error("node `{node}`: {source}")]
    Tensor {
        node: String,
        #[source]
        source: TensorError,
    },
}
