//! Mixed-precision searches (spec sections 3.6 to 3.10): the evaluator that
//! scores a configuration by recomputing only what it changed, and the
//! searches built on it.

mod evaluator;
mod fast_search;
pub mod journal;
mod layers;
pub mod log;
mod mix_search;
mod qtable_search;
mod sensitivity;
mod similarity;
mod threshold_search;

pub use evaluator::{
    Built, EvalStats, LayerRefs, MixEvaluator, OutputTransform, Precision, Trial, layer_value,
    node_by_output,
};
pub use fast_search::{FastSearch, FastSearchOutcome, fast_search};
pub use layers::{Layer, int8_layers, layers, top_type};
pub use mix_search::{MixSearch, MixSearchOutcome, mix_search};
pub use qtable_search::{LayerResult, LayerSearch, LayerSearchOutcome, MethodTable, layer_search};
pub use sensitivity::{Sensitivity, SensitivityRow, plain_cos, sensitivity, sort_rows};
pub use similarity::{OutputScore, cos_sim, score_outputs, snr};
pub use threshold_search::{Benchmark, threshold_search};
