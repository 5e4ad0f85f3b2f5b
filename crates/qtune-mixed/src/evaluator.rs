//! Evaluating mixed-precision configurations fast: build the quantized
//! model once per configuration (no re-import, no re-lowering from text),
//! and recompute only the tensors the configuration changed.
//!
//! Every tensor of a built model gets a content key: a 128-bit hash of its
//! op, the op's attributes, the bytes of its constant inputs and the keys
//! of its other inputs (a Merkle hash over the graph; graph inputs are keyed
//! by name). Two configurations that agree upstream of a layer give the
//! upstream tensors the same keys, so a trial that changes one layer's
//! precision or threshold finds every tensor above that layer in the cache
//! and recomputes only what lies downstream of it. Tensors are cached per
//! sample for the evaluation samples, within a memory budget; past the
//! budget the remaining tensors are recomputed when needed, never an error.
//!
//! Results do not depend on the cache: a cached tensor is bit-identical to
//! the tensor a full run computes (the executor is deterministic whatever
//! the thread count), which the tests check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use qtune_deploy::{Plan, PlanRequest, Processor, build_qdq, integer_exact};
use qtune_exec::{
    ExecError, Executor, Keep, NoHook, Parallelism, PrepareOptions, RunOptions, ValueHook, Values,
};
use qtune_ir::{Graph, NodeId, Op, ValueId};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use super::similarity::{OutputScore, cos_sim, f32_of, score_outputs};
use crate::PipelineError;
use qtune_calibrate::tune_refs::TuneRefs;

/// The reference model's layer tensors on every sample (see
/// [`MixEvaluator::layer_tensors`]): in memory up to a share of the cache
/// budget, beyond it in an unlinked scratch file, read back one tensor at a
/// time when a layer is compared. The bytes read back are the bytes
/// written, so the similarities do not depend on the budget.
pub struct LayerRefs {
    names: Vec<String>,
    store: TuneRefs,
}

impl LayerRefs {
    /// The tensors of layer `k` (its index in the names given to
    /// [`MixEvaluator::layer_tensors`]), one per sample.
    pub fn layer(&self, k: usize) -> Result<Vec<Tensor>, PipelineError> {
        let name = self.names.get(k).map_or("?", String::as_str);
        (0..self.store.len())
            .map(|s| {
                self.store.get(s, ValueId::from_index(k))?.ok_or_else(|| {
                    PipelineError::Settings(format!(
                        "the float model has no tensor `{name}` for sample {s}"
                    ))
                })
            })
            .collect()
    }

    /// Bytes written to the scratch file.
    pub fn spilled_bytes(&self) -> u64 {
        self.store
            .spilled
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a run does with each layer tensor it computes, sample by sample,
/// instead of keeping it: with every sample in flight, keeping the layer
/// tensors of all samples would hold a whole model's activations per sample.
#[derive(Clone, Copy)]
enum LayerWork<'a> {
    None,
    /// Store it as the reference tensor (values found in the cache too).
    Record(&'a LayerRefs, &'a HashMap<ValueId, usize>),
    /// Its similarity to the reference tensor (computed values only: a
    /// value found in the cache is unchanged).
    Compare(&'a LayerRefs, &'a HashMap<ValueId, usize>),
}

/// A run's kept values per sample, which nodes ran, and per sample the
/// layer similarities (by layer index) its [`LayerWork`] computed.
type RunResult = (Vec<Values>, Vec<bool>, Vec<Vec<Option<f64>>>);

/// The [`ValueHook`] of [`LayerWork`] for one sample.
struct LayerHook<'a> {
    sample: usize,
    work: LayerWork<'a>,
    /// By layer index: the mapped cosine to the reference.
    cos: Vec<Option<f64>>,
    error: Option<PipelineError>,
}

impl LayerHook<'_> {
    fn visit(&mut self, value: ValueId, tensor: &Tensor) {
        if self.error.is_some() {
            return;
        }
        let result = match self.work {
            LayerWork::None => Ok(()),
            LayerWork::Record(refs, index) => match index.get(&value) {
                Some(&i) => refs
                    .store
                    .insert(self.sample, ValueId::from_index(i), tensor),
                None => Ok(()),
            },
            LayerWork::Compare(refs, index) => match index.get(&value) {
                Some(&i) => refs
                    .store
                    .get(self.sample, ValueId::from_index(i))
                    .map(|r| {
                        if let Some(r) = r
                            && r.numel() == tensor.numel()
                        {
                            self.cos[i] = Some(cos_sim(&f32_of(&r), &f32_of(tensor)));
                        }
                    }),
                None => Ok(()),
            },
        };
        if let Err(e) = result {
            self.error = Some(e);
        }
    }
}

impl ValueHook for LayerHook<'_> {
    fn on_value(
        &mut self,
        _: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), ExecError> {
        self.visit(value, tensor);
        Ok(())
    }

    fn wants(&self, value: ValueId) -> bool {
        match self.work {
            LayerWork::None => false,
            LayerWork::Record(_, index) | LayerWork::Compare(_, index) => {
                index.contains_key(&value)
            }
        }
    }
}

/// The precision settings of one model to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Precision<'a> {
    /// INT8 for (mixed) quantized models; F32/F16/BF16 for float references.
    pub quantize: QuantMode,
    pub table: Option<&'a CalibrationTable>,
    /// Layers kept at another precision (`name -> mode`).
    pub qtable: &'a [(String, QuantMode)],
}

/// A model built for one [`Precision`]: the simulation graph (int8 layers
/// computing on integers, as `model_deploy` runs them), its plan and the
/// content key of every tensor.
pub struct Built {
    exec: Executor,
    keys: Vec<u128>,
    compare: Vec<ValueId>,
    pub plan: Plan,
}

impl Built {
    pub fn graph(&self) -> &Graph {
        self.exec.graph()
    }

    pub fn exec(&self) -> &Executor {
        &self.exec
    }
}

/// Counters for the run summary.
#[derive(Debug, Clone, Default)]
pub struct EvalStats {
    /// Models built.
    pub builds: usize,
    pub build_time: Duration,
    /// Model runs (each over several samples).
    pub runs: usize,
    pub run_time: Duration,
    /// Nodes executed, and nodes a full run would have executed, per sample.
    pub nodes_run: usize,
    pub nodes_total: usize,
    /// Peak bytes held by the tensor cache.
    pub cache_peak_bytes: usize,
}

/// Applied to the compared tensors of every sample before the loss
/// (`--post_process`).
pub trait OutputTransform {
    fn apply(
        &mut self,
        outputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, PipelineError>;
}

/// Evaluates configurations of one float model on a fixed set of samples.
pub struct MixEvaluator<'g> {
    graph: &'g Graph,
    processor: Processor,
    /// Float type of the ops the chip keeps in float.
    fp_type: QuantMode,
    /// Per sample: the graph inputs by name.
    samples: Vec<Vec<(String, Tensor)>>,
    /// The compared tensors and their rates (`--global_compare_layers`, or
    /// the graph outputs with rate 1).
    compare: Vec<(String, f64)>,
    /// Per sample: the reference tensors (after post-processing).
    reference: Vec<Vec<(String, Tensor)>>,
    post: Option<Box<dyn OutputTransform + 'g>>,
    cache: HashMap<u128, Vec<Tensor>>,
    cache_bytes: usize,
    /// `--memory_mb`: bounds every tensor the evaluator holds between runs
    /// and keeps from a run (see [`Self::cache_budget`]).
    budget: usize,
    /// Bytes of reference layer tensors handed out by
    /// [`Self::layer_tensors`], held by the caller beside the cache.
    held: usize,
    pub stats: EvalStats,
}

fn tensor_bytes(t: &Tensor) -> usize {
    match t.data() {
        TensorData::F32(_) | TensorData::I32(_) => t.numel() * 4,
        TensorData::I64(_) => t.numel() * 8,
        TensorData::Bool(_) | TensorData::U8(_) | TensorData::I8(_) => t.numel(),
    }
}

fn dtype_bytes(d: qtune_tensor::DType) -> usize {
    use qtune_tensor::DType;
    match d {
        DType::F32 | DType::I32 => 4,
        DType::I64 => 8,
        DType::Bool | DType::U8 | DType::I8 => 1,
    }
}

pub(crate) fn hash_tensor(h: &mut Xxh3, t: &Tensor) {
    h.update(t.dtype().name().as_bytes());
    for &d in t.dims() {
        h.update(&(d as u64).to_le_bytes());
    }
    let mut buf = Vec::with_capacity(4096);
    macro_rules! words {
        ($v:expr, $to:expr) => {
            for chunk in $v.chunks(512) {
                buf.clear();
                for &x in chunk {
                    buf.extend_from_slice(&$to(x));
                }
                h.update(&buf);
            }
        };
    }
    match t.data() {
        TensorData::F32(v) => words!(v.as_slice(), |x: f32| x.to_bits().to_le_bytes()),
        TensorData::I64(v) => words!(v.as_slice(), |x: i64| x.to_le_bytes()),
        TensorData::I32(v) => words!(v.as_slice(), |x: i32| x.to_le_bytes()),
        TensorData::Bool(v) => words!(v.as_slice(), |x: bool| [u8::from(x)]),
        TensorData::U8(v) => h.update(v.as_slice()),
        TensorData::I8(v) => words!(v.as_slice(), |x: i8| x.to_le_bytes()),
    }
}

/// The content key of the graph input `name`.
fn input_key(name: &str) -> u128 {
    let mut h = Xxh3::new();
    h.update(b"input");
    h.update(name.as_bytes());
    h.digest128()
}

/// The content key of every value of `g` (see the module docs).
pub(crate) fn content_keys(g: &Graph) -> Vec<u128> {
    let mut keys = vec![0u128; g.value_count()];
    for (id, v) in g.values() {
        let mut h = Xxh3::new();
        if let Some(c) = &v.constant {
            h.update(b"const");
            hash_tensor(&mut h, c);
            keys[id.index()] = h.digest128();
        } else if v.producer.is_none() {
            keys[id.index()] = input_key(&v.name);
        }
    }
    for (_, n) in g.nodes() {
        let mut h = Xxh3::new();
        h.update(format!("{:?}", n.op).as_bytes());
        for i in &n.inputs {
            match i {
                Some(i) => h.update(&keys[i.index()].to_le_bytes()),
                None => h.update(b"none"),
            }
        }
        let base = h.clone();
        for (k, &o) in n.outputs.iter().enumerate() {
            let mut h = base.clone();
            h.update(&(k as u64).to_le_bytes());
            h.update(g.value(o).dtype.name().as_bytes());
            keys[o.index()] = h.digest128();
        }
    }
    keys
}

impl<'g> MixEvaluator<'g> {
    /// An evaluator of `graph` (prepared, named by TPU-MLIR op names) on
    /// `samples` (graph inputs by name). `compare` names the compared
    /// tensors with their rates; empty means the graph outputs, rate 1.
    /// `cache_budget` bounds the bytes of every tensor the evaluator keeps:
    /// the reference layer tensors, the cache, and a stored run's tensors
    /// (which exist beside the cache they replace).
    pub fn new(
        graph: &'g Graph,
        processor: Processor,
        fp_type: QuantMode,
        samples: Vec<Vec<(String, Tensor)>>,
        compare: Vec<(String, f64)>,
        cache_budget: usize,
    ) -> Result<Self, PipelineError> {
        let compare = if compare.is_empty() {
            graph
                .outputs
                .iter()
                .map(|&o| (graph.value(o).name.clone(), 1.0))
                .collect()
        } else {
            for (name, _) in &compare {
                if graph.find_value(name).is_none() {
                    return Err(PipelineError::Settings(format!(
                        "--global_compare_layers: `{name}` is not a tensor of the model"
                    )));
                }
            }
            compare
        };
        let mut ev = MixEvaluator {
            graph,
            processor,
            fp_type,
            samples,
            compare,
            reference: Vec::new(),
            post: None,
            cache: HashMap::new(),
            cache_bytes: 0,
            budget: cache_budget,
            held: 0,
            stats: EvalStats::default(),
        };
        ev.seed_inputs();
        Ok(ev)
    }

    /// Bytes the cache may hold: what the reference layer tensors leave of
    /// the budget for a stored run that replaces the cache (the entries it
    /// will not keep are dropped before it runs, see [`Self::evict`]), half
    /// of it for a trial, whose tensors are kept beside the cache until it
    /// is committed or dropped.
    fn cache_budget(&self, replacing: bool) -> usize {
        let free = self.budget.saturating_sub(self.held);
        if replacing { free } else { free / 2 }
    }

    /// Drops the cache entries a run of `built` neither reads (`frontier`)
    /// nor will keep (`kept`); graph inputs stay. With `limit`, instead
    /// drops entries but those, largest first, until the cache holds at
    /// most `limit` bytes.
    fn evict(
        &mut self,
        built: &Built,
        frontier: &[ValueId],
        kept: &[ValueId],
        limit: Option<usize>,
    ) {
        let g = built.exec.graph();
        let keys = &built.keys;
        let mut protected: std::collections::HashSet<u128> = frontier
            .iter()
            .chain(&g.inputs)
            .map(|v| keys[v.index()])
            .collect();
        if limit.is_none() {
            protected.extend(kept.iter().map(|v| keys[v.index()]));
        }
        // Inputs of the evaluator's graph, whatever `built` names them.
        for (name, _) in self.samples.first().map(Vec::as_slice).unwrap_or(&[]) {
            protected.insert(input_key(name));
        }
        let mut victims: Vec<(usize, u128)> = self
            .cache
            .iter()
            .filter(|(k, _)| !protected.contains(*k))
            .map(|(k, ts)| (ts.iter().map(tensor_bytes).sum::<usize>(), *k))
            .collect();
        // Largest first, ties by key: the same entries on every run.
        victims.sort_by(|a, b| b.cmp(a));
        for (size, key) in victims {
            if limit.is_some_and(|l| self.cache_bytes <= l) {
                break;
            }
            self.cache.remove(&key);
            self.cache_bytes = self.cache_bytes.saturating_sub(size);
        }
    }

    /// Graph inputs are always in the cache.
    fn seed_inputs(&mut self) {
        let Some(first) = self.samples.first() else {
            return;
        };
        for (k, (name, _)) in first.iter().enumerate() {
            let key = input_key(name);
            if self.cache.contains_key(&key) {
                continue;
            }
            let tensors: Vec<Tensor> = self.samples.iter().map(|s| s[k].1.clone()).collect();
            self.cache_bytes += tensors.iter().map(tensor_bytes).sum::<usize>();
            self.cache.insert(key, tensors);
        }
    }

    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// A key of the samples (for a search journal's fingerprint).
    pub fn samples_key(&self) -> String {
        super::journal::samples_key(&self.samples)
    }

    /// A key of the float graph the evaluator simulates.
    pub fn graph_key(&self) -> String {
        super::journal::graph_key(self.graph)
    }

    /// The graph inputs of sample `s` for the model `built`.
    pub fn inputs_for(
        &self,
        built: &Built,
        s: usize,
    ) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
        let g = built.exec.graph();
        self.samples[s]
            .iter()
            .map(|(name, t)| Ok((g.value_by_name(name)?, t.clone())))
            .collect()
    }

    /// Applies the post-processing (if any) to one sample's compared
    /// tensors.
    pub fn post_process(
        &mut self,
        outputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, PipelineError> {
        match self.post.as_mut() {
            Some(p) => p.apply(outputs),
            None => Ok(outputs),
        }
    }

    pub fn graph(&self) -> &'g Graph {
        self.graph
    }

    pub fn processor(&self) -> Processor {
        self.processor
    }

    pub fn fp_type(&self) -> QuantMode {
        self.fp_type
    }

    /// The reference's compared tensors, per sample.
    pub fn reference(&self) -> &[Vec<(String, Tensor)>] {
        &self.reference
    }

    /// The compared tensors and their rates.
    pub fn compare(&self) -> &[(String, f64)] {
        &self.compare
    }

    /// Post-processing of the compared tensors (set it before the
    /// reference).
    pub fn set_post_process(&mut self, post: Box<dyn OutputTransform + 'g>) {
        self.post = Some(post);
    }

    /// Builds the simulation model of `p`.
    pub fn build(&mut self, p: &Precision) -> Result<Built, PipelineError> {
        self.build_from(self.graph, p)
    }

    /// Builds the simulation model of `p` from `graph`, a variant of the
    /// evaluator's float graph with the same tensor names (e.g. with other
    /// constants, as bias correction makes). Tensors upstream of what
    /// differs keep their content keys, so they are found in the cache.
    pub fn build_from(&mut self, graph: &Graph, p: &Precision) -> Result<Built, PipelineError> {
        let start = Instant::now();
        let req = PlanRequest {
            quantize: p.quantize,
            calibration: p.table,
            qtable: p.qtable,
            fp_type: self.fp_type,
            asymmetric: false,
            matmul_per_channel: false,
            weight_only: qtune_deploy::WeightOnly::default(),
        };
        let plan = Plan::new(graph, self.processor.profile(), &req)?;
        let (qdq, _) = build_qdq(graph, &plan)?;
        let sim = integer_exact(&qdq);
        let (g, _) = qtune_exec::prepare(sim, &PrepareOptions::default())?;
        let exec = Executor::new(g)?;
        let g = exec.graph();
        let keys = content_keys(g);
        let compare = self
            .compare
            .iter()
            .map(|(name, _)| {
                g.find_value(name).ok_or_else(|| {
                    PipelineError::Settings(format!(
                        "tensor `{name}` is missing from the quantized model"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        self.stats.builds += 1;
        self.stats.build_time += start.elapsed();
        Ok(Built {
            exec,
            keys,
            compare,
            plan,
        })
    }

    /// Runs `built` on the first `n` samples and returns, per sample, the
    /// values the run kept: the compared tensors and `extra` (and every
    /// computed tensor with `keep_all`). With `store` the cache is replaced
    /// by this model's tensors, within the budget (only those are computed
    /// or found, see [`Self::cache_plan`]); `store` needs all samples.
    /// Without `keep_all`, a stored run keeps only the tensors the cache
    /// will take, so its memory stays within the budget.
    fn run(
        &mut self,
        built: &Built,
        n: usize,
        store: bool,
        keep_all: bool,
    ) -> Result<Vec<Values>, PipelineError> {
        Ok(self
            .run_with(built, n, store, keep_all, &[], store, LayerWork::None)?
            .0)
    }

    /// Runs `built`; `extra` values are also computed and kept; with
    /// `replace` a stored run's tensors replace the cache. Also returns
    /// which nodes ran (by node index), and per sample the layer
    /// similarities `work` computed.
    #[allow(clippy::too_many_arguments)]
    fn run_with(
        &mut self,
        built: &Built,
        n: usize,
        store: bool,
        keep_all: bool,
        extra: &[ValueId],
        replace: bool,
        work: LayerWork,
    ) -> Result<RunResult, PipelineError> {
        let start = Instant::now();
        let n = n.min(self.samples.len());
        let g = built.exec.graph();
        let keys = &built.keys;
        // A stored run that replaces the cache keeps only the tensors of
        // its plan (all of them when they fit the budget): it computes
        // those, the compared ones and `extra`, not the tensors it would
        // drop again. Without a budget it is the same run; within one, a
        // configuration whose tensors were stored before (the float model
        // each layer's trials of search_qtable derive from) finds its plan
        // in the cache instead of recomputing what did not fit. Layer work
        // visits every layer and `keep_all` returns every tensor, so they
        // compute them all.
        let plan = (store && replace && !keep_all && matches!(work, LayerWork::None))
            .then(|| self.cache_plan(built, n, true));
        // Walk back from the wanted values: a value in the cache stops the
        // walk; any other value makes its producer run.
        let wanted: Vec<ValueId> = if let Some(plan) = &plan {
            plan.iter()
                .chain(&built.compare)
                .chain(extra)
                .copied()
                .collect()
        } else if store {
            g.nodes()
                .flat_map(|(_, n)| n.outputs.iter().copied())
                .filter(|&v| self.cacheable(g, v))
                .chain(extra.iter().copied())
                .collect()
        } else {
            built.compare.iter().chain(extra).copied().collect()
        };
        let mut run_mask = vec![false; g.node_count()];
        let mut seen = vec![false; g.value_count()];
        let mut frontier = Vec::new();
        let mut stack = wanted;
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v.index()], true) {
                continue;
            }
            let value = g.value(v);
            if value.constant.is_some() {
                continue;
            }
            if self.cache.contains_key(&keys[v.index()]) {
                frontier.push(v);
                continue;
            }
            let Some(p) = value.producer else {
                return Err(PipelineError::Settings(format!(
                    "graph input `{}` has no sample data",
                    value.name
                )));
            };
            if !std::mem::replace(&mut run_mask[p.index()], true) {
                stack.extend(g.node(p).inputs.iter().flatten().copied());
            }
        }
        let nodes_run = run_mask.iter().filter(|&&r| r).count();
        self.stats.nodes_run += nodes_run * n;
        self.stats.nodes_total += g.node_count() * n;
        let keep = if keep_all {
            Keep::All
        } else if store {
            // A stored run keeps what the cache can hold (layer outputs
            // within the budget), not the integer intermediates: with every
            // sample in flight at once, keeping everything would multiply
            // the memory.
            let mut kept = match plan {
                Some(p) => p,
                None => self.cache_plan(built, n, replace),
            };
            // The memory of the run: what it keeps beside what the cache
            // still holds. A run that replaces the cache needs only what it
            // reads or keeps; a trial's tensors live beside the cache, which
            // gives up what exceeds its half.
            if replace {
                self.evict(built, &frontier, &kept, None);
            } else {
                let limit = self.cache_budget(false);
                self.evict(built, &frontier, &kept, Some(limit));
            }
            kept.extend(built.compare.iter().chain(extra));
            Keep::Values(kept)
        } else {
            Keep::Values(built.compare.iter().chain(extra).copied().collect())
        };
        let par = if n > 1 {
            Parallelism::Sequential
        } else {
            Parallelism::Rayon
        };
        let opts = RunOptions::new(keep, par);
        let cache = &self.cache;
        let layers = match work {
            LayerWork::None => 0,
            LayerWork::Record(r, _) | LayerWork::Compare(r, _) => r.names.len(),
        };
        let run_one = |s: usize| -> Result<(Values, Vec<Option<f64>>), PipelineError> {
            let mut given = Values::default();
            for &v in &frontier {
                if let Some(t) = cache.get(&keys[v.index()]).and_then(|ts| ts.get(s)) {
                    given.insert(v, t.clone());
                }
            }
            let mut hook = LayerHook {
                sample: s,
                work,
                cos: vec![None; layers],
                error: None,
            };
            let mut out = if nodes_run == 0 {
                Values::default()
            } else if matches!(work, LayerWork::None) {
                built
                    .exec
                    .run_masked(&given, &run_mask, &opts, &mut NoHook)?
            } else {
                built.exec.run_masked(&given, &run_mask, &opts, &mut hook)?
            };
            if matches!(work, LayerWork::Record(..)) {
                for (&v, t) in frontier.iter().filter_map(|v| Some((v, given.get(*v)?))) {
                    hook.visit(v, t);
                }
            }
            if let Some(e) = hook.error {
                return Err(e);
            }
            // Values found in the cache are part of this model's result too.
            for &v in &frontier {
                if out.get(v).is_none()
                    && let Some(t) = given.get(v)
                {
                    out.insert(v, t.clone());
                }
            }
            Ok((out, hook.cos))
        };
        let (results, cos): (Vec<Values>, Vec<Vec<Option<f64>>>) = if n > 1 {
            (0..n)
                .into_par_iter()
                .map(run_one)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip()
        } else {
            (0..n)
                .map(run_one)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip()
        };
        if store && replace {
            self.replace_cache(built, &results)?;
        }
        self.stats.runs += 1;
        self.stats.run_time += start.elapsed();
        Ok((results, run_mask, cos))
    }

    /// Tensors the cache keeps: graph inputs and the tensors of the float
    /// graph (layer outputs, as the quantized model computes them, and the
    /// int8 codes of the quantized ones), not the integer intermediates of
    /// a quantized layer. A trial walks back to the nearest cached layer
    /// output.
    fn cacheable(&self, g: &Graph, v: ValueId) -> bool {
        let value = g.value(v);
        let of_layer = |n: &str| self.graph.find_value(n).is_some();
        value.producer.is_none()
            || of_layer(&value.name)
            || value.name.strip_suffix(DEQUANTIZED).is_some_and(of_layer)
            || self.codes(g, v)
    }

    /// Whether `v` holds the int8 codes of a layer tensor
    /// (`<name>_QuantizeLinear`, INT8 or UINT8).
    fn codes(&self, g: &Graph, v: ValueId) -> bool {
        let value = g.value(v);
        matches!(value.dtype, DType::I8 | DType::U8)
            && value.producer.is_some()
            && value
                .name
                .strip_suffix(QUANTIZED)
                .is_some_and(|n| self.graph.find_value(n).is_some())
    }

    /// Whether a cacheable `v` is better cached as the int8 codes it is
    /// computed from or computes: a layer's dequantized tensor (from its
    /// codes, by a DequantizeLinear), or its float output whose only reader
    /// is the QuantizeLinear making its codes. The cache then keeps the codes
    /// (a quarter of the bytes), and a trial recomputes the dequantized
    /// tensor from them (one multiply per element); results are the same
    /// bits, as the nodes are the same.
    fn held_as_codes(&self, g: &Graph, v: ValueId, readers: &[Vec<NodeId>]) -> bool {
        let value = g.value(v);
        let Some(p) = value.producer else {
            return false;
        };
        let node = g.node(p);
        if matches!(node.op, Op::DequantizeLinear { .. }) {
            return node
                .inputs
                .first()
                .copied()
                .flatten()
                .is_some_and(|c| self.codes(g, c));
        }
        let r = &readers[v.index()];
        !g.outputs.contains(&v)
            && r.len() == 1
            && matches!(g.node(r[0]).op, Op::QuantizeLinear { .. })
            && g.node(r[0])
                .outputs
                .first()
                .is_some_and(|&c| self.codes(g, c))
    }

    /// The tensors a stored run of `built` on `n` samples keeps for the
    /// cache, chosen from their shapes as `replace_cache` chooses them from
    /// the results (see [`spread_within`]; a tensor of unknown shape is
    /// kept, `replace_cache` still bounds the cache).
    fn cache_plan(&self, built: &Built, n: usize, replacing: bool) -> Vec<ValueId> {
        let g = built.exec.graph();
        let mut seen = std::collections::HashSet::new();
        let size_of = |v: ValueId| {
            let value = g.value(v);
            value
                .shape
                .as_ref()
                .map_or(0, |s| s.numel() * dtype_bytes(value.dtype) * n)
        };
        let mut kept = Vec::new();
        let mut input_bytes = 0usize;
        let mut candidates = Vec::new();
        let readers = g.consumers();
        for v in cache_order(g) {
            if !seen.insert(built.keys[v.index()]) {
                continue;
            }
            if g.value(v).producer.is_none() {
                input_bytes += size_of(v);
                kept.push(v);
            } else if self.cacheable(g, v) && !self.held_as_codes(g, v, &readers) {
                candidates.push((v, size_of(v)));
            }
        }
        let budget = self.cache_budget(replacing).saturating_sub(input_bytes);
        kept.extend(spread_within(&candidates, budget));
        kept
    }

    fn replace_cache(&mut self, built: &Built, results: &[Values]) -> Result<(), PipelineError> {
        if results.len() != self.samples.len() {
            return Err(PipelineError::Internal(
                "a stored run must cover every sample".into(),
            ));
        }
        let g = built.exec.graph();
        let mut cache = HashMap::new();
        let mut bytes = 0usize;
        let mut candidates: Vec<(ValueId, usize)> = Vec::new();
        let mut found: HashMap<ValueId, Vec<Tensor>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let readers = g.consumers();
        for v in cache_order(g) {
            let key = built.keys[v.index()];
            if !seen.insert(key) {
                continue;
            }
            let tensors: Option<Vec<Tensor>> = results.iter().map(|r| r.get(v).cloned()).collect();
            let Some(tensors) = tensors else { continue };
            let size: usize = tensors.iter().map(tensor_bytes).sum();
            if g.value(v).producer.is_none() {
                bytes += size;
                cache.insert(key, tensors);
            } else if self.cacheable(g, v) && !self.held_as_codes(g, v, &readers) {
                candidates.push((v, size));
                found.insert(v, tensors);
            }
        }
        let budget = self.cache_budget(true).saturating_sub(bytes);
        for v in spread_within(&candidates, budget) {
            let tensors = found
                .remove(&v)
                .expect("a candidate was found in the results");
            bytes += tensors.iter().map(tensor_bytes).sum::<usize>();
            cache.insert(built.keys[v.index()], tensors);
        }
        self.cache = cache;
        self.cache_bytes = bytes;
        // Graph inputs stay whether or not this run read them.
        self.seed_inputs();
        self.stats.cache_peak_bytes = self.stats.cache_peak_bytes.max(self.cache_bytes);
        Ok(())
    }

    /// The compared tensors of each sample, post-processed.
    fn compared(
        &mut self,
        built: &Built,
        values: &[Values],
    ) -> Result<Vec<Vec<(String, Tensor)>>, PipelineError> {
        let g = built.exec.graph();
        let mut out = Vec::with_capacity(values.len());
        for (s, v) in values.iter().enumerate() {
            let mut ts = Vec::with_capacity(built.compare.len());
            for &c in &built.compare {
                let t = v
                    .get(c)
                    .cloned()
                    .or_else(|| {
                        self.cache
                            .get(&built.keys[c.index()])
                            .and_then(|ts| ts.get(s).cloned())
                    })
                    .ok_or_else(|| {
                        PipelineError::Exec(qtune_exec::ExecError::NotKept(g.value(c).name.clone()))
                    })?;
                ts.push((g.value(c).name.clone(), t));
            }
            let ts = match self.post.as_mut() {
                Some(p) => p.apply(ts)?,
                None => ts,
            };
            out.push(ts);
        }
        Ok(out)
    }

    /// Runs `built` on every sample, keeps its tensors in the cache and
    /// makes its compared tensors the reference of later scores.
    pub fn set_reference(&mut self, built: &Built) -> Result<(), PipelineError> {
        let n = self.samples.len();
        let values = self.run(built, n, true, false)?;
        self.reference = self.compared(built, &values)?;
        Ok(())
    }

    /// Scores `built` against the reference on the first `n` samples.
    /// With `store`, its tensors replace the cache (for a configuration
    /// that later trials derive from).
    pub fn score(
        &mut self,
        built: &Built,
        n: usize,
        store: bool,
    ) -> Result<OutputScore, PipelineError> {
        if self.reference.is_empty() {
            return Err(PipelineError::Internal("no reference model was run".into()));
        }
        let n = if store { self.samples.len() } else { n.max(1) };
        let values = self.run(built, n, store, false)?;
        let outputs = self.compared(built, &values)?;
        let rates: Vec<f64> = self.compare.iter().map(|(_, r)| *r).collect();
        score_outputs(&self.reference[..outputs.len()], &outputs, &rates)
    }

    /// The tensors `names` of `built` on every sample (`[sample][name]`),
    /// computing only what the cache lacks. The cache is left as it is.
    pub fn tensors(
        &mut self,
        built: &Built,
        names: &[&str],
    ) -> Result<Vec<Vec<Tensor>>, PipelineError> {
        let ids = value_ids(built, names)?;
        let n = self.samples.len();
        let values = self
            .run_with(built, n, false, false, &ids, false, LayerWork::None)?
            .0;
        pick(built, &values, &ids)
    }

    /// Scores `built` on every sample and returns the tensors `names` with
    /// the score, without touching the cache: every tensor the cache lacks
    /// is computed (only what is downstream of a change, for a variant of
    /// the cached model) and kept in the trial, within the cache budget.
    /// [`MixEvaluator::commit`] then makes the trial the cached model, so
    /// an accepted change is not computed twice and a rejected one leaves
    /// the cache as it was.
    pub fn trial(&mut self, built: &Built, names: &[&str]) -> Result<Trial, PipelineError> {
        if self.reference.is_empty() {
            return Err(PipelineError::Internal("no reference model was run".into()));
        }
        let ids = value_ids(built, names)?;
        let n = self.samples.len();
        let values = self
            .run_with(built, n, true, false, &ids, false, LayerWork::None)?
            .0;
        let outputs = self.compared(built, &values)?;
        let rates: Vec<f64> = self.compare.iter().map(|(_, r)| *r).collect();
        let score = score_outputs(&self.reference[..outputs.len()], &outputs, &rates)?;
        let tensors = pick(built, &values, &ids)?;
        Ok(Trial {
            score,
            tensors,
            values,
        })
    }

    /// Makes `trial` (a trial of `built`) the cached model.
    pub fn commit(&mut self, built: &Built, trial: Trial) -> Result<(), PipelineError> {
        self.replace_cache(built, &trial.values)
    }

    /// Runs `built` on every sample keeping every tensor; `visit(sample,
    /// graph, values)` sees each sample's values (e.g. to compare layers).
    /// The tensors also replace the cache.
    pub fn run_all<F>(&mut self, built: &Built, mut visit: F) -> Result<(), PipelineError>
    where
        F: FnMut(usize, &Graph, &Values) -> Result<(), PipelineError>,
    {
        let n = self.samples.len();
        let values = self.run(built, n, true, true)?;
        for (s, v) in values.iter().enumerate() {
            visit(s, built.exec.graph(), v)?;
        }
        Ok(())
    }

    /// Runs `built` on every sample (its tensors replace the cache, see
    /// [`Self::score`]) and returns its output score and, for every layer of
    /// `refs` this run recomputed (not found in the cache), the mean mapped
    /// cosine to the reference over the samples. Tensors found in the cache
    /// are the ones an earlier run of a configuration with the same upstream
    /// computed, so their similarity is unchanged. Each layer tensor is
    /// compared as it is computed and not kept.
    pub fn score_layers(
        &mut self,
        built: &Built,
        refs: &LayerRefs,
    ) -> Result<(OutputScore, HashMap<String, f64>), PipelineError> {
        if self.reference.is_empty() {
            return Err(PipelineError::Internal("no reference model was run".into()));
        }
        let n = self.samples.len();
        let index = layer_index(built.exec.graph(), &refs.names);
        let (values, _, cos) = self.run_with(
            built,
            n,
            true,
            false,
            &[],
            true,
            LayerWork::Compare(refs, &index),
        )?;
        let mut layer_cos = HashMap::new();
        for (i, name) in refs.names.iter().enumerate() {
            // A layer counts when every sample compared it (in sample
            // order, so the mean does not depend on the threads).
            let per_sample: Option<Vec<f64>> = cos.iter().map(|c| c[i]).collect();
            if let Some(v) = per_sample
                && !v.is_empty()
            {
                layer_cos.insert(name.clone(), v.iter().sum::<f64>() / v.len() as f64);
            }
        }
        let outputs = self.compared(built, &values)?;
        let rates: Vec<f64> = self.compare.iter().map(|(_, r)| *r).collect();
        let score = score_outputs(&self.reference[..outputs.len()], &outputs, &rates)?;
        Ok((score, layer_cos))
    }

    /// Runs `built` (a reference model) on every sample and keeps its layer
    /// tensors `names` for [`Self::score_layers`]: up to half the budget in
    /// memory (the cache then gets what they leave), the rest in a scratch
    /// file. Its tensors replace the cache.
    pub fn layer_tensors(
        &mut self,
        built: &Built,
        names: &[String],
    ) -> Result<LayerRefs, PipelineError> {
        let n = self.samples.len();
        let refs = LayerRefs {
            names: names.to_vec(),
            store: TuneRefs::new(n, names.len(), self.budget / 2),
        };
        // The tensors this run records are held from now on.
        self.held = self.budget / 2;
        let index = layer_index(built.exec.graph(), names);
        self.run_with(
            built,
            n,
            true,
            false,
            &[],
            true,
            LayerWork::Record(&refs, &index),
        )?;
        self.held = refs.store.in_memory_bytes();
        Ok(refs)
    }

    /// Bytes currently held by the cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Drops every cached tensor but the graph inputs (tests compare cached
    /// and uncached results with it).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
        self.seed_inputs();
    }
}

/// The graph inputs, then the node outputs in execution order: the order
/// in which the cache considers a stored run's tensors.
fn cache_order(g: &Graph) -> Vec<ValueId> {
    let mut order: Vec<ValueId> = g.inputs.clone();
    order.extend(g.nodes().flat_map(|(_, n)| n.outputs.iter().copied()));
    order
}

/// Which of `candidates` (tensors with their bytes, in execution order)
/// the cache keeps within `budget` bytes: all of them when they fit, else
/// the smallest first (ties in execution order) while they fit.
///
/// A trial recomputes what is downstream of its change from the nearest
/// cached tensors upstream of it, so a cached tensor is worth the compute
/// upstream of it that later trials skip, and costs its bytes. Per byte,
/// small tensors win: in a CNN they are the later stages (all of them
/// fit) and, earlier, the narrow tensors between wide ones (a bottleneck's
/// projection, a CSP block's halves), which are natural checkpoints. The
/// former rule (the earliest tensors until the budget is spent) made every
/// trial past that prefix recompute everything after it.
fn spread_within(candidates: &[(ValueId, usize)], budget: usize) -> Vec<ValueId> {
    let total: usize = candidates.iter().map(|c| c.1).sum();
    if total <= budget {
        return candidates.iter().map(|c| c.0).collect();
    }
    let mut by_size: Vec<usize> = (0..candidates.len()).collect();
    by_size.sort_by_key(|&i| (candidates[i].1, i));
    let mut keep = vec![false; candidates.len()];
    let mut used = 0usize;
    for i in by_size {
        let size = candidates[i].1;
        if used + size > budget {
            break;
        }
        used += size;
        keep[i] = true;
    }
    candidates
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(c, _)| c.0)
        .collect()
}

/// The value of each layer of `names` in `g`, by layer index.
fn layer_index(g: &Graph, names: &[String]) -> HashMap<ValueId, usize> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| Some((layer_value(g, name)?, i)))
        .collect()
}

/// The result of [`MixEvaluator::trial`].
pub struct Trial {
    pub score: OutputScore,
    /// The requested tensors, `[sample][name]`.
    pub tensors: Vec<Vec<Tensor>>,
    values: Vec<Values>,
}

fn value_ids(built: &Built, names: &[&str]) -> Result<Vec<ValueId>, PipelineError> {
    let g = built.exec.graph();
    names
        .iter()
        .map(|name| {
            g.find_value(name).ok_or_else(|| {
                PipelineError::Settings(format!("tensor `{name}` is missing from the model"))
            })
        })
        .collect()
}

fn pick(
    built: &Built,
    values: &[Values],
    ids: &[ValueId],
) -> Result<Vec<Vec<Tensor>>, PipelineError> {
    let g = built.exec.graph();
    values
        .iter()
        .map(|v| {
            ids.iter()
                .map(|&id| {
                    v.get(id).cloned().ok_or_else(|| {
                        PipelineError::Exec(qtune_exec::ExecError::NotKept(
                            g.value(id).name.clone(),
                        ))
                    })
                })
                .collect()
        })
        .collect()
}

/// Suffix of the dequantized form of a quantized tensor in a built model.
const DEQUANTIZED: &str = "_DequantizeLinear";

/// Suffix of the int8 codes of a quantized tensor in a built model.
const QUANTIZED: &str = "_QuantizeLinear";

/// The tensor of layer `name` in a built model: its dequantized int8 output
/// when the layer's output is quantized (`<name>_DequantizeLinear`; an int8
/// Conv then computes no float output of its own), else the tensor itself.
/// This is what TPU-MLIR compares: the int8 output read back as float.
pub fn layer_value(g: &Graph, name: &str) -> Option<ValueId> {
    // Values of removed nodes stay in the arena without a producer.
    let live = |v: ValueId| g.value(v).producer.is_some() || g.inputs.contains(&v);
    g.find_value(&format!("{name}{DEQUANTIZED}"))
        .filter(|&v| live(v))
        .or_else(|| g.find_value(name).filter(|&v| live(v)))
}

/// The nodes of `g` whose first output is named `name`.
pub fn node_by_output(g: &Graph, name: &str) -> Option<NodeId> {
    g.find_value(name).and_then(|v| g.value(v).producer)
}

impl OutputTransform for crate::PostProcess {
    fn apply(
        &mut self,
        outputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, PipelineError> {
        crate::PostProcess::apply(self, &outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache takes the smallest tensors while they fit (all when they
    /// all fit), returned in execution order: checked against a brute
    /// force over every subset (the largest count of tensors within the
    /// budget, and among those the fewest bytes).
    #[test]
    fn cache_keeps_the_smallest_tensors_within_the_budget() {
        let ids: Vec<ValueId> = (0..6).map(ValueId::from_index).collect();
        let sizes = [50usize, 10, 30, 10, 40, 25];
        let candidates: Vec<(ValueId, usize)> = ids.iter().copied().zip(sizes).collect();
        assert_eq!(spread_within(&candidates, 1000), ids);
        for budget in [0usize, 9, 10, 20, 45, 55, 75, 100, 164, 165] {
            let got = spread_within(&candidates, budget);
            let mut best: Option<(usize, usize, u32)> = None;
            for mask in 0u32..64 {
                let bytes: usize = (0..6)
                    .filter(|i| mask >> i & 1 == 1)
                    .map(|i| sizes[i])
                    .sum();
                if bytes > budget {
                    continue;
                }
                let key = (mask.count_ones() as usize, usize::MAX - bytes, mask);
                if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                    best = Some(key);
                }
            }
            let mask = best.unwrap().2;
            let want: Vec<ValueId> = (0..6)
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| ids[i])
                .collect();
            assert_eq!(got, want, "budget {budget}");
        }
    }

    /// MobileNetV2 (BatchNorm folded), its first golden sample and a max
    /// table of every float tensor.
    fn mobilenet_fixture() -> (Graph, Vec<(String, Tensor)>, CalibrationTable) {
        use qtune_quant::CalibrationRow;
        let workloads = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/workloads"
        ));
        let graph = qtune_onnx::import_onnx(
            &workloads.join("models/mobilenetv2_nsfw.onnx"),
            &Default::default(),
        )
        .unwrap();
        let mut opts = PrepareOptions::default();
        opts.fold_batchnorm = true;
        let graph = qtune_exec::prepare(graph, &opts).unwrap().0;
        let input = &graph.value(graph.inputs[0]).name;
        let arrays =
            qtune_tensor::read_npz(&workloads.join("golden/mobilenetv2_nsfw/input.npz")).unwrap();
        let x = arrays
            .iter()
            .find(|(k, _)| k == input)
            .unwrap()
            .1
            .slice_outer(0, 1)
            .unwrap();
        let sample = vec![(input.clone(), x.clone())];
        // A max table of every float tensor.
        let float = Executor::new(graph.clone())
            .unwrap()
            .run(
                vec![(graph.inputs[0], x)],
                &RunOptions::new(Keep::All, Parallelism::Rayon),
                &mut NoHook,
            )
            .unwrap();
        let mut table = CalibrationTable::default();
        for (id, t) in float.iter() {
            if t.dtype() == DType::F32 && graph.constant_of(id).is_none() {
                let th = t.to_f32_vec().iter().fold(1e-5f32, |m, v| m.max(v.abs()));
                let name = graph.value(id).name.clone();
                table.rows.push(CalibrationRow::new(
                    name,
                    f64::from(th),
                    -f64::from(th),
                    f64::from(th),
                ));
            }
        }
        (graph, sample, table)
    }

    /// An evaluator of `graph` on `sample` (bm1684x) with the float model
    /// as its reference.
    fn evaluator<'g>(
        graph: &'g Graph,
        sample: &[(String, Tensor)],
        fp_type: QuantMode,
        budget: usize,
    ) -> MixEvaluator<'g> {
        let mut ev = MixEvaluator::new(
            graph,
            Processor::Bm1684x,
            fp_type,
            vec![sample.to_vec()],
            vec![],
            budget,
        )
        .unwrap();
        let reference = ev
            .build(&Precision {
                quantize: QuantMode::F32,
                table: None,
                qtable: &[],
            })
            .unwrap();
        ev.set_reference(&reference).unwrap();
        ev
    }

    /// A stored int8 run keeps each quantized layer as its int8 codes, not
    /// beside them its dequantized (or pre-quantization) float form; and a
    /// variant scored from that cache, under a budget that holds all of it
    /// and under one that holds a fraction, gives the bits of an
    /// evaluation without a cache (every tensor computed from the input).
    #[test]
    fn quantized_layers_are_cached_as_codes() {
        let (graph, sample, table) = mobilenet_fixture();
        let layers: Vec<String> = crate::layers(&graph).into_iter().map(|l| l.name).collect();
        let variant: Vec<(String, QuantMode)> =
            vec![(layers[layers.len() / 2].clone(), QuantMode::F32)];
        let precision = |qtable| Precision {
            quantize: QuantMode::Int8,
            table: Some(&table),
            qtable,
        };
        let run = |budget: usize| {
            let mut ev = evaluator(&graph, &sample, QuantMode::F16, budget);
            let int8 = ev.build(&precision(&[])).unwrap();
            ev.score(&int8, 1, true).unwrap();
            // What the cache holds of the all-int8 model.
            let g = int8.graph();
            let readers = g.consumers();
            let cached: Vec<ValueId> = (0..g.value_count())
                .map(ValueId::from_index)
                .filter(|v| {
                    g.value(*v).producer.is_some() && ev.cache.contains_key(&int8.keys[v.index()])
                })
                .collect();
            let codes = cached.iter().filter(|v| ev.codes(g, **v)).count();
            let beside = cached
                .iter()
                .filter(|v| ev.held_as_codes(g, **v, &readers))
                .count();
            let bytes = ev.cache_bytes;
            let built = ev.build(&precision(&variant)).unwrap();
            let out = g.value(g.outputs[0]).name.clone();
            let t = ev
                .tensors(&built, &[out.as_str()])
                .unwrap()
                .remove(0)
                .remove(0);
            (
                codes,
                beside,
                bytes,
                t.to_f32_vec()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
            )
        };
        let (codes, beside, bytes, all) = run(1 << 32);
        assert!(codes > 40, "{codes} layers cached as codes");
        assert_eq!(beside, 0, "float forms cached beside their codes");
        let (_, _, small_bytes, some) = run(bytes / 4);
        assert!(
            small_bytes <= bytes / 4,
            "{small_bytes} over the budget {}",
            bytes / 4
        );
        let (_, _, none_bytes, none) = run(0);
        assert!(
            none_bytes <= x_bytes(&sample),
            "{none_bytes} cached with no budget"
        );
        assert_eq!(
            all, none,
            "the cached evaluation differs from the uncached one"
        );
        assert_eq!(
            some, none,
            "a partly cached evaluation differs from the uncached one"
        );
    }

    /// Within a budget that holds a fraction of a configuration's tensors,
    /// storing that configuration again (as search_qtable does before each
    /// layer's trials) finds its whole plan in the cache and runs no node,
    /// and a variant scored from that cache gives the bits of one scored
    /// with no cache at all.
    #[test]
    fn a_stored_configuration_is_not_recomputed_within_a_budget() {
        let (graph, sample, table) = mobilenet_fixture();
        let layers: Vec<String> = crate::layers(&graph).into_iter().map(|l| l.name).collect();
        let float_all: Vec<(String, QuantMode)> =
            layers.iter().map(|l| (l.clone(), QuantMode::F32)).collect();
        let mut one_int8 = float_all.clone();
        one_int8.remove(layers.len() / 3);
        let precision = |qtable| Precision {
            quantize: QuantMode::Int8,
            table: Some(&table),
            qtable,
        };
        let new = |budget: usize| evaluator(&graph, &sample, QuantMode::F32, budget);
        let bits = |s: OutputScore| s.cos.to_bits();
        let mut ev = new(1 << 32);
        let base = ev.build(&precision(&float_all)).unwrap();
        ev.score(&base, 1, true).unwrap();
        let whole = ev.cache_bytes;
        let mut ev = new(whole / 3);
        let base = ev.build(&precision(&float_all)).unwrap();
        ev.score(&base, 1, true).unwrap();
        let (held, before) = (ev.cache_bytes, ev.stats.nodes_run);
        assert!(held > 0 && held <= whole / 3, "{held} cached of {whole}");
        ev.score(&base, 1, true).unwrap();
        assert_eq!(
            ev.stats.nodes_run, before,
            "storing the cached configuration again recomputed nodes"
        );
        assert_eq!(ev.cache_bytes, held);
        let trial = ev.build(&precision(&one_int8)).unwrap();
        let cached = bits(ev.score(&trial, 1, false).unwrap());
        let mut bare = new(0);
        let trial = bare.build(&precision(&one_int8)).unwrap();
        assert_eq!(cached, bits(bare.score(&trial, 1, false).unwrap()));
    }

    fn x_bytes(sample: &[(String, Tensor)]) -> usize {
        sample.iter().map(|(_, t)| tensor_bytes(t)).sum()
    }
}
