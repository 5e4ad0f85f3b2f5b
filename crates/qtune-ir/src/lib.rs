//! The qtune intermediate representation.
//!
//! A [`Graph`] is an arena of [`Node`]s and [`Value`]s addressed by typed ids.
//! Values are the edges: each keeps the tensor name it had in the source
//! model, because calibration tables, qtables and npz files are keyed by
//! those names. Nodes are kept in a topological order.
//!
//! Operator parameters that ONNX passes as tensor inputs (Reshape's shape,
//! Slice's starts, Resize's scales, ...) stay inputs here, as in ONNX; after
//! constant folding they are constant values, which shape inference reads.

// First: `op_family!` builds the registries below; `unary_op!`, `binary_op!`
// and `reduce_op!` are used by the modules after them.
#[macro_use]
mod family;
#[macro_use]
pub mod unary;
#[macro_use]
pub mod binary;
#[macro_use]
pub mod reduce;
#[macro_use]
pub mod pool;
#[macro_use]
pub mod movement;
#[macro_use]
pub mod linear;
#[macro_use]
pub mod norm;
#[macro_use]
pub mod activation;
pub mod convert;
mod error;
mod eval_cx;
pub mod families;
mod graph;
mod ids;
pub mod logic;
pub mod mlir;
pub mod onnx_node;
mod op;
pub mod passes;
pub mod quantize;
pub mod resize;
mod shape_infer;
pub mod tpu;

pub use convert::shape_range;
pub use error::IrError;
pub use eval_cx::{EvalCx, as_4d, pads4, pair};
pub use graph::{FusedRelu, Graph, Node, Value};
pub use ids::{NodeId, ValueId};
pub use movement::{SliceAxis, reshape_shape, resolve_slice, resolve_split};
pub use op::*;
pub use reduce::resolve_reduce_axes;
pub use shape_infer::{
    InferredOutput, Window, broadcast_shapes, infer_node, normalize_axis, resolve_window,
};
