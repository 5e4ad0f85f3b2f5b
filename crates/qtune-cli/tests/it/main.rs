//! CLI tests, one module per command, compiled into one test binary.

mod calibrate;
mod canonical;
mod classify;
mod common;
mod compare;
mod deploy;
mod detect;
mod errors;
mod export;
mod fp_forward;
mod hostile;
mod info;
mod py_names;
mod readers;
mod report;
mod resume;
mod run;
mod runtime_target;
mod search;
mod tpu_fixtures;
mod transform;
mod weight_only;
mod weight_transforms;
