//! Run-time CPU dispatch for the statistics hot loops (`qtune-simd`). Only
//! operations that round the same way in every compiled copy are used (IEEE
//! `+`, `/`, compares, selects, truncating conversions of values already
//! known to be in range), so results do not depend on the copy that ran.

pub(crate) use qtune_simd::dispatch;
