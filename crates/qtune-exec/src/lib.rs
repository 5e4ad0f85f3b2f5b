//! Preparing and running qtune graphs.
//!
//! [`prepare`] infers every shape and folds constant subgraphs;
//! [`Executor`] runs the prepared graph, hands every tensor to a
//! [`ValueHook`] (where calibration observers and fake quantization plug
//! in), frees intermediates after their last reader, runs independent
//! samples in parallel, and re-runs only what is downstream of changed
//! nodes from cached values. Results never depend on the thread count.

pub mod cancel;
mod error;
mod eval;
mod executor;
mod integer;
mod prepare;

pub use error::ExecError;
pub use executor::{Executor, FnHook, Keep, NoHook, RunOptions, ValueHook, Values};
pub use prepare::{PrepareOptions, PrepareReport, prepare, prepare_top};
pub use qtune_kernels::Parallelism;
