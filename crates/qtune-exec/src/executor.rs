//! The executor: runs a prepared graph on one sample (or a batch the graph
//! was shaped for), frees every intermediate tensor after its last reader,
//! hands every produced tensor to a [`ValueHook`], and can re-run only the
//! part of the graph downstream of some nodes, reading everything else from
//! an earlier run's values.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use qtune_ir::{Graph, NodeId, Op, ValueId};
use qtune_kernels::{Parallelism, UnaryOp};
use qtune_tensor::Tensor;

use crate::eval::{
    activation_of, eval_conv_packed, eval_fake_quant, eval_gemm_packed, eval_node, eval_node_fused,
    eval_pointwise_depthwise, fused_relu_op, pack_conv_weights, pack_gemm_weight,
};
use crate::integer::{IntegerPrep, eval_integer, find_integer_layers};
use crate::{ExecError, PrepareOptions, PrepareReport, prepare};

/// Which computed tensors a run keeps in its [`Values`]. Graph outputs are
/// always kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Keep {
    /// Graph outputs only; intermediates are freed after their last reader.
    #[default]
    Outputs,
    /// Every value (graph inputs and every node output).
    All,
    /// Graph outputs and these values.
    Values(Vec<ValueId>),
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    pub keep: Keep,
    /// How kernels of this run may use the current rayon pool.
    pub parallelism: Parallelism,
}

impl RunOptions {
    pub fn new(keep: Keep, parallelism: Parallelism) -> Self {
        RunOptions { keep, parallelism }
    }
}

/// Sees every graph input and every computed tensor, in execution order,
/// before any node reads it. Observers (calibration statistics) read it;
/// transforms (fake quantization) may replace it.
pub trait ValueHook {
    fn on_value(
        &mut self,
        graph: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), ExecError>;

    /// Whether the hook needs to see `value`. Values no hook needs may be
    /// fused away (a Conv output consumed only by its activation never
    /// materialises); the results are bit-identical either way.
    fn wants(&self, _value: ValueId) -> bool {
        true
    }
}

/// The hook that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl ValueHook for NoHook {
    fn on_value(&mut self, _: &Graph, _: ValueId, _: &mut Tensor) -> Result<(), ExecError> {
        Ok(())
    }
    fn wants(&self, _: ValueId) -> bool {
        false
    }
}

/// A hook from a closure.
pub struct FnHook<F>(pub F);

impl<F: FnMut(&Graph, ValueId, &mut Tensor)> ValueHook for FnHook<F> {
    fn on_value(
        &mut self,
        graph: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), ExecError> {
        (self.0)(graph, value, tensor);
        Ok(())
    }
}

/// The tensors a run kept, indexed by value id.
#[derive(Debug, Clone, Default)]
pub struct Values {
    slots: Vec<Option<Tensor>>,
}

impl Values {
    pub fn get(&self, id: ValueId) -> Option<&Tensor> {
        self.slots.get(id.index()).and_then(Option::as_ref)
    }
    /// Moves a kept tensor out (its buffer is then unshared if the run
    /// kept no other handle to it).
    pub fn take(&mut self, id: ValueId) -> Option<Tensor> {
        self.slots.get_mut(id.index()).and_then(Option::take)
    }
    /// Kept tensors in value-id order.
    pub fn iter(&self) -> impl Iterator<Item = (ValueId, &Tensor)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (ValueId::from_index(i), t)))
    }
    pub fn insert(&mut self, id: ValueId, t: Tensor) {
        if self.slots.len() <= id.index() {
            self.slots.resize(id.index() + 1, None);
        }
        self.slots[id.index()] = Some(t);
    }
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A Conv whose activation runs inside the conv kernel: the Conv writes
/// `output` directly and the `absorbed` nodes are skipped. Used only when
/// none of the `intermediates` is kept by the run or wanted by its hook.
#[derive(Debug, Clone)]
struct Fusion {
    activation: UnaryOp,
    absorbed: Vec<NodeId>,
    intermediates: Vec<ValueId>,
    output: ValueId,
}

/// Idle polls of a pool keeper between two `sched_yield` calls.
const KEEPER_YIELD_EVERY: u32 = 32;

/// Runs `f` while the other workers of the current rayon pool spin, looking
/// for work, instead of going to sleep between two kernels: a single sample
/// runs dozens of short parallel kernels, and waking a sleeping thread for
/// each costs about as much as the kernel itself. Scheduling only: results
/// are the same.
fn with_warm_pool<R>(par: Parallelism, f: impl FnOnce() -> R) -> R {
    let me = rayon::current_thread_index();
    if par != Parallelism::Rayon || rayon::current_num_threads() < 2 || me.is_none() {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::in_place_scope(|scope| {
        // One keeper per other worker, each in that worker's own broadcast
        // queue. Keepers spawned into the calling thread's deque could be
        // taken by the wrong threads: a keeper's `yield_now` may steal the
        // next keeper and run it nested, so with three or more workers one
        // thread held two keepers and another none (it slept between
        // kernels).
        scope.spawn_broadcast(|_, ctx| {
            if Some(ctx.index()) == me {
                return;
            }
            let mut idle = 0u32;
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    idle = 0;
                } else {
                    idle = idle.wrapping_add(1);
                    // Now and then let the OS run another thread on this core: when
                    // the machine is oversubscribed, the thread this keeper shares a
                    // core with may be the one running the kernel, and a keeper
                    // that never yields takes half of its time slices (runs became
                    // three times slower on a busy host).
                    if idle.is_multiple_of(KEEPER_YIELD_EVERY) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        });
        let result = f();
        done.store(true, Ordering::Release);
        result
    })
}

/// A pointwise Conv (1x1, stride 1, one group; with its fused activation, if
/// any) whose output's only reader is a depthwise Conv (with its fused
/// activation, if any): both run as one kernel that never materialises the
/// expanded tensor between them. Used only when none of the `intermediates`
/// is kept by the run or wanted by its hook.
#[derive(Debug, Clone)]
struct PairFusion {
    pw_activation: Option<UnaryOp>,
    depthwise: NodeId,
    dw_activation: Option<UnaryOp>,
    absorbed: Vec<NodeId>,
    intermediates: Vec<ValueId>,
    output: ValueId,
}

/// Feature maps smaller than this (pixels) stay in cache between two kernels anyway; the
/// pair fusion is kept for the large ones, where it saves a trip through memory.
const PAIR_MIN_PIXELS: usize = 28 * 28;

/// Finds pointwise -> depthwise Conv pairs (see [`PairFusion`]), by head node.
fn find_pairs(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    fusions: &[Option<Fusion>],
) -> Vec<Option<PairFusion>> {
    let dims =
        |v: Option<ValueId>| -> Option<Vec<usize>> { Some(graph.shape_of(v?).ok()?.0.clone()) };
    let const_dims =
        |v: Option<ValueId>| -> Option<Vec<usize>> { Some(graph.constant_of(v?)?.dims().to_vec()) };
    let all_ones = |v: &[usize]| v.iter().all(|&x| x == 1);
    // A node's output as seen downstream: after its fused activation, if any.
    let chain = |id: NodeId| -> (Option<UnaryOp>, Vec<NodeId>, Vec<ValueId>, ValueId) {
        let n = graph.node(id);
        match &fusions[id.index()] {
            Some(f) => (
                Some(f.activation),
                f.absorbed.clone(),
                f.intermediates.clone(),
                f.output,
            ),
            None => (None, Vec::new(), Vec::new(), n.outputs[0]),
        }
    };
    graph
        .nodes()
        .map(|(id, n)| {
            let Op::Conv(a) = &n.op else { return None };
            let x = dims(n.inputs.first().copied().flatten())?;
            let w = const_dims(n.inputs.get(1).copied().flatten())?;
            let (c, h, wd) = match x[..] {
                [_, c, h, w] => (c, h, w),
                _ => return None,
            };
            let pointwise = w.len() == 4
                && w[1] == c
                && w[2] == 1
                && w[3] == 1
                && a.group <= 1
                && all_ones(&a.strides)
                && all_ones(&a.dilations)
                && a.pads.iter().all(|&p| p == 0)
                && n.outputs.len() == 1
                && dims(Some(n.outputs[0]))? == vec![x[0], w[0], h, wd];
            if !pointwise
                || !(3..=qtune_kernels::POINTWISE_DEPTHWISE_MAX_DEPTH).contains(&c)
                || h * wd < PAIR_MIN_PIXELS
            {
                return None;
            }
            let m = w[0];
            let (pw_activation, mut absorbed, mut intermediates, mid) = chain(id);
            let list = &consumers[mid.index()];
            if list.len() != 1 || graph.outputs.contains(&mid) {
                return None;
            }
            let dw = list[0];
            let dn = graph.node(dw);
            let Op::Conv(da) = &dn.op else { return None };
            let dw_w = const_dims(dn.inputs.get(1).copied().flatten())?;
            let bias_ok = match dn.inputs.get(2).copied().flatten() {
                None => true,
                Some(b) => graph.constant_of(b).is_some(),
            };
            let depthwise = dn.inputs.first().copied().flatten() == Some(mid)
                && dn.inputs.iter().flatten().filter(|&&v| v == mid).count() == 1
                && da.group == m
                && dw_w.len() == 4
                && dw_w[0] == m
                && dw_w[1] == 1
                && bias_ok
                && dn.outputs.len() == 1
                && dims(Some(dn.outputs[0]))?.len() == 4;
            if !depthwise {
                return None;
            }
            let (dw_activation, dw_absorbed, dw_intermediates, output) = chain(dw);
            intermediates.push(mid);
            intermediates.extend(dw_intermediates);
            absorbed.push(dw);
            absorbed.extend(dw_absorbed);
            Some(PairFusion {
                pw_activation,
                depthwise: dw,
                dw_activation,
                absorbed,
                intermediates,
                output,
            })
        })
        .collect()
}

/// A QuantizeLinear read only by a DequantizeLinear with the same scale and
/// zero point: the pair runs as one fake-quantization pass. Used only when
/// the integer tensor between them is neither kept nor wanted by the hook.
#[derive(Debug, Clone)]
struct QdqFusion {
    dequantize: NodeId,
    intermediate: ValueId,
    output: ValueId,
}

/// Finds the QuantizeLinear -> DequantizeLinear pairs (see [`QdqFusion`]).
fn find_qdq(graph: &Graph, consumers: &[Vec<NodeId>]) -> Vec<Option<QdqFusion>> {
    let same_param = |a: Option<&Option<ValueId>>, b: Option<&Option<ValueId>>| match (a, b) {
        (Some(Some(a)), Some(Some(b))) => {
            a == b
                || matches!(
                    (graph.constant_of(*a), graph.constant_of(*b)),
                    (Some(x), Some(y)) if x.shape() == y.shape() && x.data() == y.data()
                )
        }
        (None | Some(None), None | Some(None)) => true,
        _ => false,
    };
    graph
        .nodes()
        .map(|(_, n)| {
            let Op::QuantizeLinear { axis } = n.op else {
                return None;
            };
            let v = *n.outputs.first()?;
            let list = &consumers[v.index()];
            if list.len() != 1 || graph.outputs.contains(&v) {
                return None;
            }
            let d = graph.node(list[0]);
            let Op::DequantizeLinear { axis: d_axis } = d.op else {
                return None;
            };
            let rank = graph.shape_of(v).ok()?.0.len();
            let norm = |a: i64| {
                if a < 0 {
                    a + i64::try_from(rank).unwrap_or(0)
                } else {
                    a
                }
            };
            let ok = d.inputs.first() == Some(&Some(v))
                && d.inputs.iter().flatten().filter(|&&i| i == v).count() == 1
                && norm(axis) == norm(d_axis)
                && same_param(n.inputs.get(1), d.inputs.get(1))
                && same_param(n.inputs.get(2), d.inputs.get(2))
                && n.inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .is_some_and(|s| graph.constant_of(s).is_some());
            ok.then(|| QdqFusion {
                dequantize: list[0],
                intermediate: v,
                output: d.outputs[0],
            })
        })
        .collect()
}

/// An executable graph.
#[derive(Debug, Clone)]
pub struct Executor {
    graph: Graph,
    /// Readers of each value (node inputs), by value index.
    consumers: Vec<Vec<NodeId>>,
    /// Fusion headed by each node, by node index.
    fusions: Vec<Option<Fusion>>,
    /// Pointwise -> depthwise pair headed by each node, by node index.
    pairs: Vec<Option<PairFusion>>,
    /// QuantizeLinear -> DequantizeLinear pair headed by each node.
    qdq: Vec<Option<QdqFusion>>,
    /// Packed weights and fusable requantization of each integer layer.
    integer: Vec<Option<IntegerPrep>>,
    /// Weights of each Conv node packed for the direct convolution kernel, by node index:
    /// packed on the node's first run (once per model, not once per call) and shared by
    /// every later run and sample; `None` inside when the node does not run on that kernel.
    packed: Vec<OnceLock<Option<Arc<qtune_kernels::PackedConvWeights>>>>,
    /// The constant weight of each Gemm or MatMul node that runs on the few-row product,
    /// packed on the node's first run (once per model; the product packs it on every call
    /// otherwise, to the same bits), by node index.
    gemm_weights: Vec<OnceLock<Option<Arc<qtune_kernels::FewRowsWeights>>>>,
    /// Whether Conv and Gemm weights are packed once per model (the default) or per call.
    pack_weights: bool,
}

/// Finds Conv -> activation and Conv -> SiLU (`x * Sigmoid(x)`) chains
/// whose intermediate values have no other reader.
fn find_fusions(graph: &Graph, consumers: &[Vec<NodeId>]) -> Vec<Option<Fusion>> {
    let single_use = |v: ValueId| crate::integer::single_reader(graph, consumers, v);
    graph
        .nodes()
        .map(|(_, n)| {
            if !matches!(n.op, Op::Conv(_)) || n.outputs.len() != 1 {
                return None;
            }
            let v = n.outputs[0];
            // A Relu fused into the Conv in the graph (TPU-MLIR's
            // `do_relu`) runs in the kernel, like a separate activation.
            if let Some(relu) = n.relu {
                return Some(Fusion {
                    activation: fused_relu_op(relu),
                    absorbed: Vec::new(),
                    intermediates: Vec::new(),
                    output: v,
                });
            }
            if graph.outputs.contains(&v) {
                return None;
            }
            if let Some(c) = single_use(v) {
                let act = activation_of(graph, c)?;
                return Some(Fusion {
                    activation: act,
                    absorbed: vec![c],
                    intermediates: vec![v],
                    output: graph.node(c).outputs[0],
                });
            }
            // SiLU: v feeds exactly a Sigmoid and a Mul(v, sigmoid(v)).
            let list = &consumers[v.index()];
            if list.len() != 2 {
                return None;
            }
            let (sig, mul) = match (&graph.node(list[0]).op, &graph.node(list[1]).op) {
                (Op::Sigmoid, Op::Mul) => (list[0], list[1]),
                (Op::Mul, Op::Sigmoid) => (list[1], list[0]),
                _ => return None,
            };
            let s = graph.node(sig).outputs[0];
            let m = graph.node(mul);
            let pair_ok = m.inputs == vec![Some(v), Some(s)] || m.inputs == vec![Some(s), Some(v)];
            if !pair_ok || single_use(s) != Some(mul) {
                return None;
            }
            Some(Fusion {
                activation: UnaryOp::Silu,
                absorbed: vec![sig, mul],
                intermediates: vec![v, s],
                output: m.outputs[0],
            })
        })
        .collect()
}

impl Executor {
    /// Wraps a graph that went through [`prepare`].
    pub fn new(graph: Graph) -> Result<Self, ExecError> {
        for (_, n) in graph.nodes() {
            for &o in &n.outputs {
                graph.shape_of(o)?;
            }
        }
        let consumers = graph.consumers();
        let fusions = find_fusions(&graph, &consumers);
        let pairs = find_pairs(&graph, &consumers, &fusions);
        let qdq = find_qdq(&graph, &consumers);
        let integer = find_integer_layers(&graph, &consumers);
        let packed = (0..graph.node_count()).map(|_| OnceLock::new()).collect();
        let gemm_weights = (0..graph.node_count()).map(|_| OnceLock::new()).collect();
        Ok(Executor {
            graph,
            consumers,
            fusions,
            pairs,
            qdq,
            integer,
            packed,
            gemm_weights,
            pack_weights: true,
        })
    }

    /// Prepares (shape inference, constant folding) and wraps a graph.
    pub fn from_graph(
        graph: Graph,
        opts: &PrepareOptions,
    ) -> Result<(Self, PrepareReport), ExecError> {
        let (graph, report) = prepare(graph, opts)?;
        Ok((Self::new(graph)?, report))
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// How many Conv + activation chains can run fused.
    pub fn fusion_count(&self) -> usize {
        self.fusions.iter().flatten().count()
    }

    /// How many QuantizeLinear -> DequantizeLinear pairs can run as one
    /// fake-quantization pass.
    pub fn fake_quant_fusion_count(&self) -> usize {
        self.qdq.iter().flatten().count()
    }

    /// How many integer layers can write their requantized codes directly.
    pub fn integer_tail_count(&self) -> usize {
        self.integer
            .iter()
            .flatten()
            .filter(|p| p.tail.is_some())
            .count()
    }

    /// How many pointwise -> depthwise Conv pairs can run as one kernel.
    pub fn pair_fusion_count(&self) -> usize {
        self.pairs.iter().flatten().count()
    }

    /// Checks and orders the inputs of one run.
    fn check_inputs(
        &self,
        inputs: Vec<(ValueId, Tensor)>,
    ) -> Result<Vec<(ValueId, Tensor)>, ExecError> {
        let g = &self.graph;
        let mut by_input: Vec<Option<Tensor>> = vec![None; g.inputs.len()];
        for (id, t) in inputs {
            let pos = g
                .inputs
                .iter()
                .position(|&i| i == id)
                .ok_or_else(|| ExecError::NotAnInput(g.value(id).name.clone()))?;
            let v = g.value(id);
            let expected = g.shape_of(id)?;
            if t.shape() != expected {
                return Err(ExecError::InputShape {
                    name: v.name.clone(),
                    expected: expected.clone(),
                    actual: t.shape().clone(),
                });
            }
            if t.dtype() != v.dtype {
                return Err(ExecError::InputDType {
                    name: v.name.clone(),
                    expected: v.dtype,
                    actual: t.dtype(),
                });
            }
            by_input[pos] = Some(t);
        }
        g.inputs
            .iter()
            .zip(by_input)
            .map(|(&id, t)| {
                t.map(|t| (id, t))
                    .ok_or_else(|| ExecError::MissingInput(g.value(id).name.clone()))
            })
            .collect()
    }

    fn kept_mask(&self, keep: &Keep) -> Vec<bool> {
        let mut kept = vec![matches!(keep, Keep::All); self.graph.value_count()];
        for &o in &self.graph.outputs {
            kept[o.index()] = true;
        }
        if let Keep::Values(list) = keep {
            for v in list {
                kept[v.index()] = true;
            }
        }
        kept
    }

    /// Runs the whole graph on one set of inputs (one per graph input, with
    /// the graph's static shapes).
    pub fn run(
        &self,
        inputs: Vec<(ValueId, Tensor)>,
        opts: &RunOptions,
        hook: &mut dyn ValueHook,
    ) -> Result<Values, ExecError> {
        let inputs = self.check_inputs(inputs)?;
        let all: Vec<bool> = vec![true; self.graph.node_count()];
        let mut slots: Vec<Option<Tensor>> = vec![None; self.graph.value_count()];
        for (id, mut t) in inputs {
            hook.on_value(&self.graph, id, &mut t)?;
            slots[id.index()] = Some(t);
        }
        self.execute(slots, &all, None, opts, hook)
    }

    /// Runs several independent samples. With more than one sample the
    /// samples run in parallel on the current rayon pool, each with
    /// sequential kernels; a single sample uses parallel kernels. Either way
    /// every result is bit-identical to a sequential run. `make_hook(i)`
    /// gives sample `i` its own hook, returned with its values.
    pub fn run_samples<H, F>(
        &self,
        samples: Vec<Vec<(ValueId, Tensor)>>,
        keep: &Keep,
        make_hook: F,
    ) -> Result<Vec<(Values, H)>, ExecError>
    where
        H: ValueHook + Send,
        F: Fn(usize) -> H + Sync,
    {
        if samples.len() <= 1 || rayon::current_num_threads() == 1 {
            let par = if samples.len() <= 1 {
                Parallelism::Rayon
            } else {
                Parallelism::Sequential
            };
            let opts = RunOptions::new(keep.clone(), par);
            return samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut h = make_hook(i);
                    let v = self.run(s, &opts, &mut h)?;
                    Ok((v, h))
                })
                .collect();
        }
        let opts = RunOptions::new(keep.clone(), Parallelism::Sequential);
        samples
            .into_par_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut h = make_hook(i);
                let v = self.run(s, &opts, &mut h)?;
                Ok((v, h))
            })
            .collect()
    }

    /// The nodes that must be recomputed when the given nodes change: the
    /// nodes themselves and everything that reads their outputs,
    /// transitively, as a mask over node indices.
    pub fn downstream_of(&self, changed: &[NodeId]) -> Vec<bool> {
        let mut dirty = vec![false; self.graph.node_count()];
        for &n in changed {
            dirty[n.index()] = true;
        }
        // Nodes are topologically ordered, so one forward sweep suffices.
        for i in 0..self.graph.node_count() {
            if !dirty[i] {
                continue;
            }
            for &o in &self.graph.node(NodeId::from_index(i)).outputs {
                for &c in &self.consumers[o.index()] {
                    dirty[c.index()] = true;
                }
            }
        }
        dirty
    }

    /// Re-runs only `changed` and the nodes downstream of them; every other
    /// tensor a recomputed node reads comes from `cache` (an earlier run that
    /// kept it). The result holds the recomputed values (per `opts.keep`)
    /// plus, for graph outputs that were not recomputed, the cached ones.
    pub fn run_downstream(
        &self,
        cache: &Values,
        changed: &[NodeId],
        opts: &RunOptions,
        hook: &mut dyn ValueHook,
    ) -> Result<Values, ExecError> {
        let dirty = self.downstream_of(changed);
        let slots: Vec<Option<Tensor>> = vec![None; self.graph.value_count()];
        self.execute(slots, &dirty, Some(cache), opts, hook)
    }

    /// Runs exactly the nodes set in `run_mask` (by node index); every
    /// tensor they read that none of them computes comes from `cache`
    /// (graph inputs included). Callers that know which tensors are still
    /// valid (e.g. by content, as the mixed-precision searches do) use it
    /// to recompute the smallest set of nodes.
    pub fn run_masked(
        &self,
        cache: &Values,
        run_mask: &[bool],
        opts: &RunOptions,
        hook: &mut dyn ValueHook,
    ) -> Result<Values, ExecError> {
        if run_mask.len() != self.graph.node_count() {
            return Err(ExecError::RunMask {
                mask: run_mask.len(),
                nodes: self.graph.node_count(),
            });
        }
        let slots: Vec<Option<Tensor>> = vec![None; self.graph.value_count()];
        self.execute(slots, run_mask, Some(cache), opts, hook)
    }

    fn execute(
        &self,
        slots: Vec<Option<Tensor>>,
        run_mask: &[bool],
        cache: Option<&Values>,
        opts: &RunOptions,
        hook: &mut dyn ValueHook,
    ) -> Result<Values, ExecError> {
        with_warm_pool(opts.parallelism, || {
            self.execute_nodes(slots, run_mask, cache, opts, hook)
        })
    }

    fn execute_nodes(
        &self,
        mut slots: Vec<Option<Tensor>>,
        run_mask: &[bool],
        cache: Option<&Values>,
        opts: &RunOptions,
        hook: &mut dyn ValueHook,
    ) -> Result<Values, ExecError> {
        let g = &self.graph;
        let kept = self.kept_mask(&opts.keep);
        // Remaining reads of each value by the nodes of this run.
        let mut remaining = vec![0usize; g.value_count()];
        for (id, n) in g.nodes() {
            if run_mask[id.index()] {
                for v in n.inputs.iter().flatten() {
                    remaining[v.index()] += 1;
                }
            }
        }
        let mut skip = vec![false; g.node_count()];
        for (id, n) in g.nodes() {
            if !run_mask[id.index()] || skip[id.index()] {
                continue;
            }
            // A host's cancellation request stops the run here (an unwind,
            // see `cancel`); one relaxed load per node.
            crate::cancel::checkpoint();
            let pair = self.pairs[id.index()].as_ref().filter(|p| {
                p.absorbed
                    .iter()
                    .all(|a| run_mask[a.index()] && !skip[a.index()])
                    && p.intermediates
                        .iter()
                        .all(|&v| !kept[v.index()] && !hook.wants(v))
            });
            let fusion = self.fusions[id.index()].as_ref().filter(|f| {
                f.absorbed.iter().all(|a| run_mask[a.index()])
                    && f.intermediates
                        .iter()
                        .all(|&v| !kept[v.index()] && !hook.wants(v))
            });
            let qdq = self.qdq[id.index()].as_ref().filter(|f| {
                run_mask[f.dequantize.index()]
                    && !kept[f.intermediate.index()]
                    && !hook.wants(f.intermediate)
            });
            let mut inputs = Vec::with_capacity(n.inputs.len());
            for input in &n.inputs {
                let Some(v) = *input else {
                    inputs.push(None);
                    continue;
                };
                if let Some(c) = g.constant_of(v) {
                    inputs.push(Some(c.clone()));
                    continue;
                }
                remaining[v.index()] -= 1;
                let last_read = remaining[v.index()] == 0 && !kept[v.index()];
                let t = match (&mut slots[v.index()], last_read) {
                    (slot @ Some(_), true) => slot.take(),
                    (Some(t), false) => Some(t.clone()),
                    (None, _) => cache.and_then(|c| c.get(v)).cloned(),
                };
                let t = t.ok_or_else(|| ExecError::NotKept(g.value(v).name.clone()))?;
                inputs.push(Some(t));
            }
            if let Some(f) = qdq {
                skip[f.dequantize.index()] = true;
                let mut t = eval_fake_quant(g, id, inputs, f.output)?
                    .pop()
                    .ok_or_else(|| ExecError::NotKept(g.value(f.output).name.clone()))?;
                hook.on_value(g, f.output, &mut t)?;
                if remaining[f.output.index()] > 0 || kept[f.output.index()] {
                    slots[f.output.index()] = Some(t);
                }
                continue;
            }
            let (outputs, out_ids) = match (pair, fusion) {
                (Some(p), _) => {
                    for a in &p.absorbed {
                        skip[a.index()] = true;
                    }
                    let t = eval_pointwise_depthwise(
                        g,
                        id,
                        inputs,
                        opts.parallelism,
                        p.pw_activation,
                        p.depthwise,
                        p.dw_activation,
                        p.output,
                        self.packed_conv(id),
                    )?;
                    (t, std::slice::from_ref(&p.output))
                }
                (None, Some(f)) => {
                    for a in &f.absorbed {
                        skip[a.index()] = true;
                    }
                    let act = Some(f.activation);
                    let t = match self.packed_conv(id) {
                        Some(pk) => eval_conv_packed(g, id, inputs, opts.parallelism, act, pk)?,
                        None => eval_node_fused(g, id, inputs, opts.parallelism, act)?,
                    };
                    (t, std::slice::from_ref(&f.output))
                }
                (None, None) => match &self.integer[id.index()] {
                    Some(prep) => {
                        let tail = prep.tail.as_ref().filter(|t| {
                            t.absorbed.iter().all(|a| run_mask[a.index()])
                                && t.intermediates
                                    .iter()
                                    .all(|&v| !kept[v.index()] && !hook.wants(v))
                        });
                        for a in tail.iter().flat_map(|t| &t.absorbed) {
                            skip[a.index()] = true;
                        }
                        let t = eval_integer(g, id, inputs, opts.parallelism, Some(prep), tail)?;
                        let ids = match tail {
                            Some(t) => std::slice::from_ref(&t.output),
                            None => n.outputs.as_slice(),
                        };
                        (t, ids)
                    }
                    None => {
                        let t = match self.packed_conv(id) {
                            // A Conv with a fused Relu has a `Fusion` (above);
                            // should one come here, its Relu still applies.
                            Some(pk) => {
                                let act = n.relu.map(fused_relu_op);
                                eval_conv_packed(g, id, inputs, opts.parallelism, act, pk)?
                            }
                            None => match self.gemm_weight(id) {
                                Some(pk) => eval_gemm_packed(g, id, inputs, opts.parallelism, pk)?,
                                None => eval_node(g, id, inputs, opts.parallelism)?,
                            },
                        };
                        (t, n.outputs.as_slice())
                    }
                },
            };
            for (&o, mut t) in out_ids.iter().zip(outputs) {
                debug_assert_eq!(
                    Some(t.shape()),
                    g.value(o).shape.as_ref(),
                    "node {}",
                    n.name
                );
                hook.on_value(g, o, &mut t)?;
                if remaining[o.index()] > 0 || kept[o.index()] {
                    slots[o.index()] = Some(t);
                }
            }
        }
        // Graph outputs that this run did not recompute come from the cache.
        if let Some(cache) = cache {
            for &o in &g.outputs {
                if slots[o.index()].is_none() {
                    slots[o.index()] = cache.get(o).cloned();
                }
            }
        }
        for (i, s) in slots.iter_mut().enumerate() {
            if !kept[i] {
                *s = None;
            }
        }
        Ok(Values { slots })
    }

    /// Whether to pack each Conv's weights once per model for the direct convolution
    /// kernel (the default; it keeps a packed copy of those weights, about their size) or
    /// per call. The results are the same bits either way.
    pub fn with_packed_conv_weights(mut self, on: bool) -> Self {
        self.pack_weights = on;
        self
    }

    /// The packed weights of Conv node `id`, packed on first use (see `packed`).
    fn packed_conv(&self, id: NodeId) -> Option<&qtune_kernels::PackedConvWeights> {
        if !self.pack_weights || !matches!(self.graph.node(id).op, Op::Conv(_)) {
            return None;
        }
        self.packed[id.index()]
            .get_or_init(|| pack_conv_weights(&self.graph, id).map(Arc::new))
            .as_deref()
    }

    /// The packed constant weight of Gemm or MatMul node `id`, packed on first use (see
    /// `gemm_weights`).
    fn gemm_weight(&self, id: NodeId) -> Option<&qtune_kernels::FewRowsWeights> {
        if !self.pack_weights || !matches!(self.graph.node(id).op, Op::Gemm(_) | Op::MatMul) {
            return None;
        }
        self.gemm_weights[id.index()]
            .get_or_init(|| pack_gemm_weight(&self.graph, id).map(Arc::new))
            .as_deref()
    }

    /// How many Gemm / MatMul nodes have run on weights packed once for the few-row product.
    pub fn packed_gemm_count(&self) -> usize {
        self.gemm_weights
            .iter()
            .filter(|p| p.get().is_some_and(Option::is_some))
            .count()
    }

    /// How many Conv nodes have run on weights packed once for the direct kernel.
    pub fn packed_conv_count(&self) -> usize {
        self.packed
            .iter()
            .filter(|p| p.get().is_some_and(Option::is_some))
            .count()
    }

    /// The graph outputs of a run, by name, in model order.
    pub fn outputs_of(&self, values: &Values) -> Result<Vec<(String, Tensor)>, ExecError> {
        self.graph
            .outputs
            .iter()
            .map(|&o| {
                let name = self.graph.value(o).name.clone();
                values
                    .get(o)
                    .cloned()
                    .map(|t| (name.clone(), t))
                    .ok_or(ExecError::NotKept(name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The expansion + depthwise pairs of the workload MobileNetV2 are found; the
    /// integration tests check that fused and unfused runs agree bit for bit.
    #[test]
    fn mobilenet_pairs_are_found() {
        let root = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/workloads"
        ));
        let model = root.join("models/mobilenetv2_nsfw.onnx");
        let graph = qtune_onnx::import_onnx(&model, &Default::default()).expect("import");
        let opts = PrepareOptions {
            fold_batchnorm: true,
            ..Default::default()
        };
        let (exec, _) = Executor::from_graph(graph, &opts).expect("prepare");
        // 112x112: 1, 56x56: 2, 28x28: 3 (the 14x14 and 7x7 pairs stay unfused).
        assert_eq!(exec.pair_fusion_count(), 6);
    }
}
