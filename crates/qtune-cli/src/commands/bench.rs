use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use qtune_exec::{ExecError, Keep, NoHook, Parallelism, PrepareOptions, RunOptions, ValueHook};
use qtune_ir::{Graph, ValueId};
use qtune_tensor::Tensor;
use qtune_tensor::read_npz;

use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx).
    model: PathBuf,
    /// Input arrays; samples stacked on axis 0 form the batch.
    #[arg(long)]
    input: PathBuf,
    /// Samples per batch (taken from the input file, cycling if it has fewer).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed iterations.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also print the time spent per op type (one sample, sequential run).
    #[arg(long)]
    profile: bool,
    /// How many of the slowest nodes `--profile` lists (0: all of them).
    #[arg(long = "profile_nodes", requires = "profile", default_value_t = 12)]
    profile_nodes: usize,
    /// Keep BatchNormalization as separate nodes (by default it is folded
    /// into the preceding Conv, as ONNX Runtime and TPU-MLIR do).
    #[arg(long = "no_fold_bn", alias = "no-fold-bn")]
    no_fold_bn: bool,
}

/// Attributes the time between consecutive hook calls to the op type of the
/// node that produced the value (the executor calls the hook right after
/// each node).
struct ProfileHook {
    last: Instant,
    per_op: std::collections::BTreeMap<&'static str, (f64, usize)>,
    per_node: std::collections::HashMap<qtune_ir::NodeId, f64>,
}

impl ValueHook for ProfileHook {
    fn on_value(&mut self, graph: &Graph, value: ValueId, _: &mut Tensor) -> Result<(), ExecError> {
        let now = Instant::now();
        if let Some(p) = graph.value(value).producer {
            let ms = (now - self.last).as_secs_f64() * 1e3;
            let e = self.per_op.entry(graph.node(p).op.op_type()).or_default();
            e.0 += ms;
            e.1 += 1;
            *self.per_node.entry(p).or_default() += ms;
        }
        self.last = now;
        Ok(())
    }

    /// Profiles the same fused execution as the timed runs.
    fn wants(&self, _: ValueId) -> bool {
        false
    }
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let mut prep = PrepareOptions::default();
    prep.fold_batchnorm = !args.no_fold_bn;
    let exec = model::load_with(&args.model, None, &prep)?;
    let arrays = read_npz(&args.input)?;
    let samples = model::samples_from_arrays(
        &exec,
        &arrays,
        &format!("input file `{}`", args.input.display()),
    )?;
    let batch: Vec<_> = (0..args.batch)
        .map(|i| samples[i % samples.len()].clone())
        .collect();
    let mut times = Vec::with_capacity(args.iters);
    for i in 0..args.warmup + args.iters {
        let start = Instant::now();
        let out = exec.run_samples(batch.clone(), &Keep::Outputs, |_| NoHook)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(out);
        if i >= args.warmup {
            times.push(ms);
        }
    }
    if args.profile {
        let opts = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
        let mut hook = ProfileHook {
            last: Instant::now(),
            per_op: Default::default(),
            per_node: Default::default(),
        };
        for _ in 0..args.iters {
            hook.last = Instant::now();
            exec.run(samples[0].clone(), &opts, &mut hook)?;
        }
        let g = exec.graph();
        let mut nodes: Vec<_> = hook.per_node.iter().map(|(&n, &ms)| (n, ms)).collect();
        nodes.sort_by(|a, b| b.1.total_cmp(&a.1));
        eprintln!("slowest nodes (ms/run, output shape):");
        #[allow(clippy::cast_precision_loss)]
        let listed = if args.profile_nodes == 0 {
            nodes.len()
        } else {
            args.profile_nodes
        };
        for (n, ms) in nodes.iter().take(listed) {
            let node = g.node(*n);
            let shape = node
                .outputs
                .first()
                .and_then(|&o| g.value(o).shape.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default();
            eprintln!(
                "  {:>8.3} {} ({}) {shape}",
                ms / args.iters as f64,
                node.name,
                node.op.op_type()
            );
        }
        let mut rows: Vec<_> = hook.per_op.into_iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        #[allow(clippy::cast_precision_loss)]
        for (op, (ms, n)) in rows {
            eprintln!(
                "{op:<20} {:>9.3} ms/run {:>5} nodes",
                ms / args.iters as f64,
                n / args.iters
            );
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    #[allow(clippy::cast_precision_loss)]
    let per_image = median / args.batch as f64;
    println!(
        "{{\"model\":\"{}\",\"batch\":{},\"threads\":{},\"ms_per_batch_median\":{median:.4},\"ms_per_image_median\":{per_image:.4},\"ms_min\":{:.4}}}",
        args.model.display(),
        args.batch,
        rayon::current_num_threads(),
        times[0]
    );
    Ok(())
}
