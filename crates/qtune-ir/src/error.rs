use qtune_tensor::{DType, Shape};

/// Errors raised while building, checking or transforming a graph. Each
/// names the node (and its op type) or value concerned.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("node `{node}` ({op}), input {index}: {message}")]
    BadInput {
        node: String,
        op: &'static str,
        index: usize,
        message: String,
    },
    #[error("node `{node}` ({op}): {message}")]
    BadNode {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error(
        "node `{node}` ({op}), input {index} `{value}` must be a constant (computed shapes are not supported)"
    )]
    NotConstant {
        node: String,
        op: &'static str,
        index: usize,
        value: String,
    },
    #[error("node `{node}` ({op}): input shapes {a} and {b} cannot be broadcast together")]
    Broadcast {
        node: String,
        op: &'static str,
        a: Shape,
        b: Shape,
    },
    #[error("node `{node}` ({op}): expected {expected} input, got {actual}")]
    DType {
        node: String,
        op: &'static str,
        expected: &'static str,
        actual: DType,
    },
    #[error("value `{0}` has no known shape")]
    UnknownShape(String),
    #[error("no tensor named `{0}` in the graph")]
    NoSuchValue(String),
    #[error("a tensor named `{0}` is already in the graph")]
    DuplicateValue(String),
    #[error("the graph has a cycle or a node reads a value produced later (at node `{0}`)")]
    NotTopological(String),
}
