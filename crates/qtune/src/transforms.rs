//! The weight transforms as separate steps (the searches run them on their
//! own models): `--sq` and `--we` ([`apply_weight_transforms`]), `--bc`
//! ([`correct_biases`]), and how their models are named and written.

pub use crate::bias_correction::{BcRequest, apply as correct_biases};
pub use crate::weight_transforms::{
    TransformRequest, Transformed, apply as apply_weight_transforms, conv_op_name, output_stem,
    reload, write_log, write_model,
};
