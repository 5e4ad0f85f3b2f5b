//! The mixed-precision searches (spec sections 3.6 to 3.10): the evaluator
//! that scores a configuration by recomputing only what it changed, and the
//! searches built on it; `fp_forward`'s layer choice; the transformer
//! pattern of `--transformer`; the `--post_process` script runner; and the
//! measures of a run's report ([`report`]).

// The calibration crate's error and progress, as `crate::` paths.
pub(crate) use qtune_calibrate::{PipelineError, Progress};

mod evaluator;
mod fast_search;
mod fp_forward;
pub mod journal;
mod layers;
pub mod log;
mod mix_search;
pub mod post_process;
mod qtable_search;
pub mod report;
mod sensitivity;
mod similarity;
mod threshold_search;
mod transformer_pattern;

pub use evaluator::{
    Built, EvalStats, LayerRefs, MixEvaluator, OutputTransform, Precision, Trial, layer_value,
    node_by_output,
};
pub use fast_search::{FastSearch, FastSearchOutcome, fast_search};
pub use fp_forward::{fp_forward_layers, fp_forward_table, parse_block};
pub use layers::{Layer, int8_layers, layers, top_type};
pub use mix_search::{MixSearch, MixSearchOutcome, mix_search};
pub use post_process::{PostProcess, PostProcessError, parse_compare_layers};
pub use qtable_search::{LayerResult, LayerSearch, LayerSearchOutcome, MethodTable, layer_search};
pub use sensitivity::{Sensitivity, SensitivityRow, plain_cos, sensitivity, sort_rows};
pub use similarity::{OutputScore, cos_sim, score_outputs, snr};
pub use threshold_search::{Benchmark, threshold_search};
pub use transformer_pattern::transformer_pattern_layers;
