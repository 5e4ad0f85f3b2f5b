//! Cancellation (`qtune_exec::cancel`): a request made while a graph runs
//! stops it at the next node with a `Cancelled` unwind; after `clear` the
//! same run completes. Its own test binary: the flag is process-wide.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use qtune_exec::{Executor, Keep, Parallelism, PrepareOptions, RunOptions, ValueHook, cancel};
use qtune_ir::{Graph, ValueId};
use qtune_tensor::{Tensor, read_npz};

/// Counts the values the run hands out and requests a cancellation at the
/// `at`-th one, as a host's signal handler would from another thread.
struct RequestAt {
    at: usize,
    seen: usize,
}

impl ValueHook for RequestAt {
    fn on_value(
        &mut self,
        _: &Graph,
        _: ValueId,
        _: &mut Tensor,
    ) -> Result<(), qtune_exec::ExecError> {
        self.seen += 1;
        if self.seen == self.at {
            cancel::request();
        }
        Ok(())
    }
}

#[test]
fn a_request_stops_the_run_at_the_next_node_and_clear_lets_it_finish() {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    let graph = qtune_onnx::import_onnx(
        &root.join("models/mobilenetv2_nsfw.onnx"),
        &Default::default(),
    )
    .unwrap();
    let (exec, _) = Executor::from_graph(graph, &PrepareOptions::default()).unwrap();
    let input = read_npz(&root.join("golden/mobilenetv2_nsfw/input.npz")).unwrap();
    let inputs = vec![(
        exec.graph().inputs[0],
        input[0].1.slice_outer(0, 1).unwrap(),
    )];
    let opts = RunOptions::new(Keep::Outputs, Parallelism::Sequential);

    // The whole run, for the count of values it hands out.
    let mut full = RequestAt {
        at: usize::MAX,
        seen: 0,
    };
    exec.run(inputs.clone(), &opts, &mut full).unwrap();
    assert!(full.seen > 40, "{} values", full.seen);

    let mut hook = RequestAt { at: 10, seen: 0 };
    let caught = catch_unwind(AssertUnwindSafe(|| {
        exec.run(inputs.clone(), &opts, &mut hook)
    }));
    assert!(cancel::is_requested());
    cancel::clear();
    let payload = caught.expect_err("a requested cancellation must stop the run");
    assert!(
        cancel::is_cancelled(payload.as_ref()),
        "not a Cancelled payload"
    );
    // Stopped at the next node: one node can hand out a few values (fused
    // pairs), never the rest of the graph.
    assert!(
        hook.seen < 10 + 4,
        "{} of {} values after the request at the 10th",
        hook.seen,
        full.seen
    );

    // With the flag down the same run completes, with the same outputs.
    let mut again = RequestAt {
        at: usize::MAX,
        seen: 0,
    };
    let a = exec.run(inputs.clone(), &opts, &mut again).unwrap();
    assert_eq!(again.seen, full.seen);
    let b = exec.run(inputs, &opts, &mut qtune_exec::NoHook).unwrap();
    let out = exec.graph().outputs[0];
    assert_eq!(
        a.get(out).unwrap().as_f32().unwrap(),
        b.get(out).unwrap().as_f32().unwrap()
    );
}
