//! Quantized models: what a processor does to a float model quantized with
//! a calibration table and a qtable, as a QDQ graph.
//!
//! * [`Processor`] / [`Profile`]: the per-chip rules (weights, activation
//!   types, float types, ops kept in float); the tables are in
//!   [`profile`]'s docs.
//! * [`Plan`]: the precision of each op and the range of each tensor after
//!   TPU-MLIR's threshold propagation.
//! * [`build_qdq`]: the QDQ graph. qtune's executor runs it (fake
//!   quantization: a QuantizeLinear -> DequantizeLinear pair runs as one
//!   pass; int8 layers run on integers, see [`sim`]) and `qtune_onnx`
//!   writes it as a QDQ ONNX model for ONNX Runtime.

pub mod awq;
pub mod gptq;
mod io_names;
mod plan;
pub mod profile;
mod qdq;
mod qtable;
pub mod sim;
#[cfg(test)]
mod test_rng;
pub mod weight_only;

pub use io_names::{onnx_name_of, rename_io};
pub use plan::{FloatReason, HUGE_THRESHOLD, Plan, PlanRequest, Range};
pub use profile::{Family, Processor, Profile, WeightScheme};
pub use qdq::{QdqReport, build_qdq, build_qdq_with};
pub use qtable::{QtableMatch, match_qtable};
pub use sim::{SimOptions, integer_exact, integer_exact_with};
pub use weight_only::{WeightMethod, WeightOnly};

/// Errors of planning and building a quantized model.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The tables or the request do not fit the model.
    #[error("{0}")]
    Input(String),
    /// A request qtune cannot satisfy.
    #[error("{0}")]
    Unsupported(String),
}

/// A quantized model: its plan and QDQ graph.
#[derive(Debug, Clone)]
pub struct QuantizedModel {
    pub plan: Plan,
    pub qdq: qtune_ir::Graph,
    pub report: QdqReport,
}

impl QuantizedModel {
    /// The graph qtune runs to simulate the model: the QDQ graph with its
    /// int8 layers computing on integers ([`integer_exact`]).
    pub fn simulation_graph(&self) -> qtune_ir::Graph {
        integer_exact(&self.qdq)
    }
}

/// Plans and builds the quantized form of `graph` (a prepared graph whose
/// value names are the table's op names) for `processor`.
pub fn quantize(
    graph: &qtune_ir::Graph,
    processor: Processor,
    req: &PlanRequest,
) -> Result<QuantizedModel, DeployError> {
    let plan = Plan::new(graph, processor.profile(), req)?;
    let (qdq, report) = build_qdq(graph, &plan)?;
    Ok(QuantizedModel { plan, qdq, report })
}

/// [`quantize`] with the input Hessians of the weight-only layers, which
/// the GPTQ methods of [`WeightMethod`] need.
pub fn quantize_with_hessians(
    graph: &qtune_ir::Graph,
    processor: Processor,
    req: &PlanRequest,
    hessians: Option<&gptq::Hessians>,
) -> Result<QuantizedModel, DeployError> {
    let plan = Plan::new(graph, processor.profile(), req)?;
    let (qdq, report) = build_qdq_with(graph, &plan, hessians)?;
    Ok(QuantizedModel { plan, qdq, report })
}
