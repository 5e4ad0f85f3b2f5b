//! The calibration driver (spec sections 3.1 to 3.4,
//! `kld_calibrator.py: ActivationCalibrator`): one streaming statistics
//! pass, thresholds with TPU-MLIR's special cases, optional tuning, and the
//! calibration table files.
//!
//! # Memory
//!
//! Batches are inferred in groups of `g = min(threads, 8)`, one batch per
//! worker, and the statistics of a group are updated while the next group
//! runs, so at most `2g` batches' activations are alive, whatever the number
//! of samples. A tensor whose statistics need only its min/max (method
//! `max`) is summarised as soon as it is produced and its data dropped. The
//! per-tensor state is bounded (histograms, running min/max, sums), except
//! the percentile tails, whose size is proportional to the number of
//! batches by definition of the method. Tuning keeps the float activations
//! of the `tune_num` tuning batches.
//!
//! # Determinism
//!
//! Every tensor's statistics see the batches in sample order, whatever the
//! number of threads: parallelism is across the batches of a group for
//! inference (each batch's result does not depend on where it ran), across
//! tensors when updating statistics and computing thresholds, and across
//! threshold candidates when tuning, never across the samples of one
//! tensor's statistics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use qtune_exec::{Executor, Keep, NoHook, Parallelism, RunOptions, ValueHook, Values};
use qtune_ir::{Graph, NodeId, ValueId};
use qtune_quant::distance::{abs_sum, squared_distance};
use qtune_quant::{
    CalibrationMethod, CalibrationRow, CalibrationTable, HistogramLine, PercentileSchedule,
    SpecialCaseTensor, StatsConfig, TensorStats, Thresholds, TimeLine, format_7f,
    special_case_overrides,
};
use qtune_tensor::{DType, Tensor};

use crate::PipelineError;
use crate::fake_quant::{
    fake_quant_activation_into, fake_quant_tensor, fake_quant_weight_per_channel,
    weight_channel_axis,
};
use crate::inputs::SampleLoader;
use crate::tune_elementwise::{Elementwise, candidate_squared_distances};

/// Settings of one calibration run.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationSettings {
    /// `--cali_method`.
    pub method: CalibrationMethod,
    /// `--histogram_bin_num`.
    pub histogram_bin_num: usize,
    /// `--tune_num`: tuning batches (0 turns tuning off). Tuning runs only
    /// for kl, aciq_gauss and aciq_laplace (spec 3.4).
    pub tune_num: usize,
    /// Candidate steps of the tuner (`debug_cmd tune_steps`, default 21).
    pub tune_steps: u32,
    /// `debug_cmd use_torch_observer_for_cali`: the kl threshold comes from
    /// PyTorch's HistogramObserver instead of KLD.
    pub torch_observer: bool,
    /// Methods whose statistics the same pass also collects (the searches
    /// calibrate several methods at once).
    pub extra_methods: Vec<CalibrationMethod>,
    /// Bytes of the tuner's float activations (every tensor of the tuning
    /// batches) held in memory; beyond them they go to a scratch file
    /// (`--memory_mb`). The thresholds do not depend on it.
    pub keep_memory_bytes: usize,
    /// `--range mean`: the table's min/max columns (what `--asymmetric`
    /// quantizes with) are the means over samples of each sample's min and
    /// max instead of the observed min and max.
    pub mean_range: bool,
}

/// Default of [`CalibrationSettings::keep_memory_bytes`]: with it, kl with
/// tuning on the workloads (ppocr_v4_det640 included) peaks under 2 GB.
pub const DEFAULT_KEEP_MEMORY_BYTES: usize = 1024 << 20;

impl Default for CalibrationSettings {
    fn default() -> Self {
        CalibrationSettings {
            method: CalibrationMethod::Kl,
            histogram_bin_num: 2048,
            tune_num: 5,
            tune_steps: 21,
            torch_observer: false,
            extra_methods: Vec::new(),
            keep_memory_bytes: DEFAULT_KEEP_MEMORY_BYTES,
            mean_range: false,
        }
    }
}

impl CalibrationSettings {
    pub fn new(method: CalibrationMethod) -> Self {
        CalibrationSettings {
            method,
            ..CalibrationSettings::default()
        }
    }

    /// Whether the method is tuned (spec 3.4: kl and aciq, tune_num > 0).
    pub fn tunes(&self) -> bool {
        self.tune_num > 0
            && matches!(
                self.method,
                CalibrationMethod::Kl
                    | CalibrationMethod::AciqGauss
                    | CalibrationMethod::AciqLaplace
            )
    }

    fn special_cases(&self) -> bool {
        matches!(
            self.method,
            CalibrationMethod::Mse | CalibrationMethod::AciqGauss | CalibrationMethod::AciqLaplace
        )
    }
}

/// Receives progress of the long stages. Implementations must be cheap.
pub trait Progress: Sync {
    /// A stage of `total` steps begins.
    fn start(&self, _stage: &str, _total: usize) {}
    /// `n` more steps of the current stage are done.
    fn advance(&self, _n: usize) {}
    /// The current stage is over.
    fn finish(&self) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// One tensor of the calibration table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableEntry {
    pub value: ValueId,
    pub name: String,
    /// Index of the producing op in the op list (`top.Input` ops first).
    pub op_index: usize,
    /// Output of a `top.Input` op.
    pub is_input: bool,
    /// Produced by Conv, MatMul or Gemm (`top.Conv`/`top.MatMul`).
    pub is_matmul_or_conv: bool,
}

/// The tensors that get a table row, in op-list order (graph inputs, then
/// every node output in node order), and the op count of the percentile
/// depth schedule.
pub fn table_entries(graph: &Graph) -> (Vec<TableEntry>, usize) {
    let mut out = Vec::new();
    for (i, &id) in graph.inputs.iter().enumerate() {
        out.push(TableEntry {
            value: id,
            name: graph.value(id).name.clone(),
            op_index: i,
            is_input: true,
            is_matmul_or_conv: false,
        });
    }
    let base = graph.inputs.len();
    for (id, node) in graph.nodes() {
        // TPU-MLIR's rule names `top.Conv` and `top.MatMul` (spec 3.9):
        // the weighted layers written as those (not ConvTranspose's
        // `top.Deconv`).
        let conv = node
            .op
            .linear()
            .is_some_and(|s| matches!(s.top, "top.Conv" | "top.MatMul"));
        for &o in &node.outputs {
            out.push(TableEntry {
                value: o,
                name: graph.value(o).name.clone(),
                op_index: base + id.index(),
                is_input: false,
                is_matmul_or_conv: conv,
            });
        }
    }
    (out, base + graph.node_count())
}

/// The result of a calibration run.
#[derive(Debug, Clone)]
pub struct CalibrationOutcome {
    pub method: CalibrationMethod,
    pub histogram_bin_num: usize,
    /// Calibration batches `N`.
    pub batches: usize,
    /// Rows before tuning.
    pub untuned_rows: Vec<CalibrationRow>,
    /// Rows after tuning (`None` when tuning did not run).
    pub tuned_rows: Option<Vec<CalibrationRow>>,
    /// Tuning batches used.
    pub tune_batches: usize,
    /// Thresholds tuning raised.
    pub tuned_changes: usize,
    /// Warnings in TPU-MLIR's wording, in table order.
    pub warnings: Vec<String>,
    pub statistics_time: Duration,
    pub tuning_time: Duration,
}

impl CalibrationOutcome {
    /// The rows of the final table.
    pub fn rows(&self) -> &[CalibrationRow] {
        self.tuned_rows.as_deref().unwrap_or(&self.untuned_rows)
    }
}

/// The statistics of every table entry, updated from inside the runs: each
/// tensor is observed by the hook right after it is produced (in cache), and
/// then released, so a run keeps no more activations than a plain run. Each
/// entry takes its samples in sample order (`turn`): a run that reaches an
/// entry before the previous sample has observed it waits. The oldest running
/// sample never waits (every earlier sample is done), so the runs always make
/// progress, and the statistics equal one sequential pass.
struct Wavefront<'a> {
    slot_of: &'a [Option<usize>],
    stats: Vec<Mutex<TensorStats>>,
    /// The sample each entry observes next.
    turn: Vec<AtomicUsize>,
    /// Set when a run failed: waiting runs give up.
    failed: AtomicBool,
    /// The first error by sample index.
    first_error: Mutex<Option<(usize, PipelineError)>>,
}

impl Wavefront<'_> {
    fn fail(&self, sample: usize, e: PipelineError) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = lock(&self.first_error);
        if slot.as_ref().is_none_or(|(j, _)| sample < *j) {
            *slot = Some((sample, e));
        }
    }

    /// Observes `tensor` as sample `sample` of entry `slot`, in turn.
    fn observe(&self, slot: usize, sample: usize, tensor: &Tensor) -> Result<(), PipelineError> {
        let mut spins = 0u32;
        while self.turn[slot].load(Ordering::Acquire) != sample {
            if self.failed.load(Ordering::SeqCst) {
                return Err(PipelineError::Settings("another sample failed".into()));
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let result = {
            let mut st = lock(&self.stats[slot]);
            match tensor.as_f32() {
                Ok(x) => st.observe(x),
                Err(_) => st.observe(&tensor.to_f32_vec()),
            }
        };
        // The turn moves on even after an error, so that no run waits for it.
        self.turn[slot].store(sample + 1, Ordering::Release);
        result.map_err(PipelineError::from)
    }
}

/// The hook of one statistics run (sample `sample`).
struct StatsHook<'a, 'w> {
    wavefront: &'a Wavefront<'w>,
    sample: usize,
    /// Where every tensor of the run goes, when it is one of the first
    /// samples whose activations the tuner reuses.
    keep_all: Option<&'a TuneRefs>,
}

impl ValueHook for StatsHook<'_, '_> {
    fn on_value(
        &mut self,
        _graph: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), qtune_exec::ExecError> {
        if let Some(refs) = self.keep_all
            && let Err(e) = refs.insert(self.sample, value, tensor)
        {
            self.wavefront.fail(self.sample, e);
        }
        if let Some(Some(slot)) = self.wavefront.slot_of.get(value.index())
            && let Err(e) = self.wavefront.observe(*slot, self.sample, tensor)
        {
            self.wavefront.fail(self.sample, e);
        }
        Ok(())
    }

    fn wants(&self, value: ValueId) -> bool {
        self.keep_all.is_some()
            || matches!(self.wavefront.slot_of.get(value.index()), Some(Some(_)))
    }
}

/// Cap on the samples inferred at once by [`collect_statistics`] (beyond it,
/// each sample runs parallel kernels).
const MAX_CONCURRENT_SAMPLES: usize = 8;

/// One streaming pass over the batches of `loader`: runs the float model
/// and feeds every tensor of `entries` into its statistics.
pub fn collect_statistics(
    exec: &Executor,
    entries: &[TableEntry],
    op_count: usize,
    loader: &SampleLoader,
    settings: &CalibrationSettings,
    progress: &dyn Progress,
) -> Result<Vec<TensorStats>, PipelineError> {
    collect_statistics_keeping(exec, entries, op_count, loader, settings, 0, progress)
        .map(|(stats, _)| stats)
}

use crate::tune_refs::TuneRefs;

/// [`collect_statistics`] that also returns every tensor of the first
/// `keep_first` batches (what a run with `Keep::All` returns), for the
/// tuner.
fn collect_statistics_keeping(
    exec: &Executor,
    entries: &[TableEntry],
    op_count: usize,
    loader: &SampleLoader,
    settings: &CalibrationSettings,
    keep_first: usize,
    progress: &dyn Progress,
) -> Result<(Vec<TensorStats>, Option<TuneRefs>), PipelineError> {
    let graph = exec.graph();
    let n = loader.batch_count();
    let mut methods = vec![settings.method];
    methods.extend(settings.extra_methods.iter().copied());
    let mut config = StatsConfig::with_methods(&methods);
    config.histogram_bin_num = settings.histogram_bin_num;
    config.mean_range = settings.mean_range;
    if settings.torch_observer && settings.method == CalibrationMethod::Kl {
        // The observer replaces KLD: no histogram is needed.
        config.methods = Vec::new();
        config.torch_observer = true;
    }
    let mut tail_config = config.clone();
    tail_config.collect_tails = methods.iter().any(|&m| {
        matches!(
            m,
            CalibrationMethod::Mse | CalibrationMethod::AciqGauss | CalibrationMethod::AciqLaplace
        )
    });
    let last_five: Vec<usize> = (entries.len().saturating_sub(5)..entries.len()).collect();
    let configs: Vec<StatsConfig> = (0..entries.len())
        .map(|slot| {
            if last_five.contains(&slot) {
                tail_config.clone()
            } else {
                config.clone()
            }
        })
        .collect();
    let stats = entries
        .iter()
        .zip(&configs)
        .map(|(e, cfg)| {
            TensorStats::new(
                e.name.clone(),
                cfg,
                PercentileSchedule::new(e.op_index, op_count, n),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut slot_of = vec![None; graph.value_count()];
    for (slot, e) in entries.iter().enumerate() {
        slot_of[e.value.index()] = Some(slot);
    }
    progress.start("statistics", n);
    // `workers` samples run at once, one per worker with sequential kernels
    // (on a small CNN this uses the cores better than one sample with
    // parallel kernels, whose many short kernels leave workers waiting);
    // each worker takes the next sample as soon as it is done with one.
    let threads = rayon::current_num_threads().max(1);
    let workers = threads.min(MAX_CONCURRENT_SAMPLES);
    let par = if workers < threads {
        Parallelism::Rayon
    } else {
        Parallelism::Sequential
    };
    let opts = RunOptions::new(Keep::Outputs, par);
    let wavefront = Wavefront {
        slot_of: &slot_of,
        turn: (0..stats.len()).map(|_| AtomicUsize::new(0)).collect(),
        stats: stats.into_iter().map(Mutex::new).collect(),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
    };
    let next_sample = AtomicUsize::new(0);
    let kept = (keep_first.min(n) > 0).then(|| {
        TuneRefs::new(
            keep_first.min(n),
            graph.value_count(),
            settings.keep_memory_bytes,
        )
    });
    (0..workers).into_par_iter().for_each(|_| {
        while !wavefront.failed.load(Ordering::SeqCst) {
            let i = next_sample.fetch_add(1, Ordering::SeqCst);
            if i >= n {
                break;
            }
            let mut hook = StatsHook {
                wavefront: &wavefront,
                sample: i,
                keep_all: kept.as_ref().filter(|_| i < keep_first),
            };
            let run = loader
                .load(i)
                .and_then(|inputs| Ok(exec.run(inputs, &opts, &mut hook)?));
            match run {
                Ok(_) => progress.advance(1),
                Err(e) => wavefront.fail(i, e),
            }
        }
    });
    if let Some((_, e)) = lock(&wavefront.first_error).take() {
        return Err(e);
    }
    if let Some((slot, _)) = wavefront
        .turn
        .iter()
        .enumerate()
        .find(|(_, t)| t.load(Ordering::SeqCst) != n)
    {
        return Err(PipelineError::Internal(format!(
            "tensor `{}` was not computed for every sample",
            entries[slot].name
        )));
    }
    progress.finish();
    let stats = wavefront
        .stats
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect();
    Ok((stats, kept))
}

/// Locks `m`, also after a panic elsewhere (the data is plain values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Table rows with what tuning needs beside them.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRows {
    /// One row per entry, in entry order.
    pub rows: Vec<CalibrationRow>,
    /// `max(|min|, |max|)` per entry (after the near-zero rule).
    pub abs_max: Vec<f64>,
    /// Warnings in TPU-MLIR's wording, in entry order.
    pub warnings: Vec<String>,
}

/// Thresholds of every entry for the configured method, with the special
/// cases of spec 3.3.5 (mse/aciq) applied.
pub fn thresholds_to_rows(
    entries: &[TableEntry],
    stats: &[TensorStats],
    settings: &CalibrationSettings,
) -> Result<ThresholdRows, PipelineError> {
    let all: Vec<Thresholds> = stats
        .par_iter()
        .map(|s| s.thresholds())
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::with_capacity(entries.len());
    let mut abs_max = Vec::with_capacity(entries.len());
    let mut warnings = Vec::new();
    for (e, t) in entries.iter().zip(&all) {
        warnings.extend(t.warnings.iter().cloned());
        let (th, min, max) = if settings.torch_observer && settings.method == CalibrationMethod::Kl
        {
            // Spec 3.3.7: stored in the kl slot, clamped to >= 1e-5.
            let th = t.torch_observer.unwrap_or(1e-5).max(1e-5);
            let (min, max) = t.range();
            (th, min, max)
        } else {
            t.table_row(settings.method).ok_or_else(|| {
                PipelineError::Settings(format!(
                    "tensor `{}`: no {} threshold was computed",
                    e.name, settings.method
                ))
            })?
        };
        rows.push(CalibrationRow::new(e.name.clone(), th, min, max));
        abs_max.push(t.abs_max);
    }
    if settings.special_cases() {
        // The last five tensors from the output backwards, then the inputs.
        let mut list: Vec<SpecialCaseTensor> = Vec::new();
        for slot in (entries.len().saturating_sub(5)..entries.len()).rev() {
            let e = &entries[slot];
            list.push(SpecialCaseTensor {
                name: e.name.clone(),
                is_input: e.is_input,
                is_matmul_or_conv: e.is_matmul_or_conv,
                pct: all[slot].abs_percentile,
                abs_max: all[slot].abs_max,
            });
        }
        for (slot, e) in entries.iter().enumerate() {
            if e.is_input && !list.iter().any(|t| t.name == e.name) {
                list.push(SpecialCaseTensor {
                    name: e.name.clone(),
                    is_input: true,
                    is_matmul_or_conv: false,
                    pct: None,
                    abs_max: all[slot].abs_max,
                });
            }
        }
        for (name, th) in special_case_overrides(&list) {
            if let Some(r) = rows.iter_mut().find(|r| r.name == name) {
                r.threshold = th;
            }
        }
    }
    Ok(ThresholdRows {
        rows,
        abs_max,
        warnings,
    })
}

/// Runs the whole calibration: statistics, thresholds, tuning.
/// `tune_loader` supplies the tuning batches (`--tune_list`); without it the
/// first batches of `loader` are used.
pub fn calibrate(
    exec: &Executor,
    loader: &SampleLoader,
    tune_loader: Option<&SampleLoader>,
    settings: &CalibrationSettings,
    progress: &dyn Progress,
) -> Result<CalibrationOutcome, PipelineError> {
    let mut s = settings.clone();
    s.extra_methods.clear();
    let mut out = calibrate_methods(
        exec,
        loader,
        tune_loader,
        &[settings.method],
        &s,
        false,
        progress,
    )?;
    out.pop()
        .ok_or_else(|| PipelineError::Settings("no calibration method".into()))
}

/// Calibrates several methods from one statistics pass (the search modes,
/// spec 2.1.1). With `tune_all`, every method is tuned when `tune_num > 0`
/// (TPU-MLIR's `gen_multiple_thresholds`); otherwise only kl and aciq.
pub fn calibrate_methods(
    exec: &Executor,
    loader: &SampleLoader,
    tune_loader: Option<&SampleLoader>,
    methods: &[CalibrationMethod],
    settings: &CalibrationSettings,
    tune_all: bool,
    progress: &dyn Progress,
) -> Result<Vec<CalibrationOutcome>, PipelineError> {
    if settings.histogram_bin_num < 2 {
        return Err(PipelineError::Settings(format!(
            "--histogram_bin_num must be at least 2, got {}",
            settings.histogram_bin_num
        )));
    }
    let Some(&first) = methods.first() else {
        return Err(PipelineError::Settings("no calibration method".into()));
    };
    let graph = exec.graph();
    let (entries, op_count) = table_entries(graph);
    let start = Instant::now();
    let mut pass = settings.clone();
    pass.method = first;
    pass.extra_methods = methods[1..].to_vec();
    let tunes = |sm: &CalibrationSettings| {
        if tune_all {
            sm.tune_num > 0
        } else {
            sm.tunes()
        }
    };
    // Without a tune list the tuner runs on the first batches: their
    // activations are kept from this pass instead of being computed again.
    let any_tuned = methods.iter().any(|&m| {
        let mut sm = settings.clone();
        sm.method = m;
        tunes(&sm)
    });
    let keep_first = if tune_loader.is_none() && any_tuned {
        settings.tune_num.min(loader.batch_count())
    } else {
        0
    };
    let (stats, kept) = collect_statistics_keeping(
        exec, &entries, op_count, loader, &pass, keep_first, progress,
    )?;
    let mut kept = kept;
    let statistics_time = start.elapsed();
    let mut per_method = Vec::with_capacity(methods.len());
    for &m in methods {
        let mut sm = settings.clone();
        sm.method = m;
        sm.extra_methods.clear();
        per_method.push((sm.clone(), thresholds_to_rows(&entries, &stats, &sm)?));
    }
    drop(stats);
    let mut refs: Option<TuneRefs> = None;
    let mut outcomes = Vec::with_capacity(methods.len());
    for (sm, rows) in per_method {
        let ThresholdRows {
            rows,
            abs_max,
            warnings,
        } = rows;
        let mut outcome = CalibrationOutcome {
            method: sm.method,
            histogram_bin_num: sm.histogram_bin_num,
            batches: loader.batch_count(),
            untuned_rows: rows,
            tuned_rows: None,
            tune_batches: 0,
            tuned_changes: 0,
            warnings,
            statistics_time,
            tuning_time: Duration::ZERO,
        };
        if tunes(&sm) {
            let start = Instant::now();
            let tl = tune_loader.unwrap_or(loader);
            let count = sm.tune_num.min(tl.batch_count());
            if refs.is_none() && tune_loader.is_none() {
                refs = kept.take().filter(|k| k.len() == count);
            }
            if refs.is_none() {
                let r = TuneRefs::new(count, graph.value_count(), sm.keep_memory_bytes);
                for i in 0..count {
                    let inputs = tl.load(i)?;
                    let opts = RunOptions::new(Keep::All, Parallelism::Rayon);
                    r.insert_all(i, &exec.run(inputs, &opts, &mut NoHook)?)?;
                }
                refs = Some(r);
            }
            let Some(refs) = refs.as_ref() else {
                return Err(PipelineError::Internal("no tuning activations".into()));
            };
            // TPU-MLIR's tuner reads its starting thresholds back from the
            // `<cali>.1` text, so it starts from the 7-decimal values.
            let mut thresholds: Vec<f64> = outcome
                .untuned_rows
                .iter()
                .map(|r| format_7f(r.threshold).parse().unwrap_or(r.threshold))
                .collect();
            let changes = tune(
                graph,
                &entries,
                &abs_max,
                &mut thresholds,
                refs,
                sm.tune_steps,
                progress,
            )?;
            let tuned = outcome
                .untuned_rows
                .iter()
                .zip(&thresholds)
                .map(|(r, &th)| CalibrationRow::new(r.name.clone(), th, r.min, r.max))
                .collect();
            outcome.tuned_rows = Some(tuned);
            outcome.tune_batches = count;
            outcome.tuned_changes = changes;
            outcome.tuning_time = start.elapsed();
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// One op as a graph of its own, to run it alone.
struct SingleNode {
    exec: Executor,
    /// Original graph input value -> the new graph's input value.
    inputs: Vec<(ValueId, ValueId)>,
    /// The new graph's first output.
    output: ValueId,
}

/// A one-node graph for `node`, with its Conv/Gemm/MatMul weight
/// fake-quantized per channel. (The executor runs whole graphs or
/// everything downstream of a node; a one-node graph is the cheapest way
/// to run exactly one op on given inputs.)
fn single_node(graph: &Graph, node_id: NodeId) -> Result<SingleNode, PipelineError> {
    let node = graph.node(node_id);
    let mut g = Graph::new(node.name.clone());
    let mut map = Vec::new();
    let mut inputs = Vec::with_capacity(node.inputs.len());
    for (i, input) in node.inputs.iter().enumerate() {
        let Some(v) = *input else {
            inputs.push(None);
            continue;
        };
        let value = graph.value(v);
        if let Some(c) = &value.constant {
            let c = match weight_channel_axis(&node.op, i, c.dims().len()) {
                Some(axis) => fake_quant_weight_per_channel(c, axis),
                None => c.clone(),
            };
            inputs.push(Some(g.add_constant(value.name.clone(), c)));
        } else {
            let nv = g.add_value(value.name.clone(), value.dtype, value.shape.clone());
            if !g.inputs.contains(&nv) {
                g.inputs.push(nv);
                map.push((v, nv));
            }
            inputs.push(Some(nv));
        }
    }
    let outputs: Vec<ValueId> = node
        .outputs
        .iter()
        .map(|&o| {
            let v = graph.value(o);
            g.add_value(v.name.clone(), v.dtype, v.shape.clone())
        })
        .collect();
    let first = *outputs
        .first()
        .ok_or_else(|| PipelineError::Internal(format!("node `{}` has no output", node.name)))?;
    g.add_node_with_relu(
        node.name.clone(),
        node.op.clone(),
        inputs,
        outputs.clone(),
        node.relu,
    );
    g.outputs = outputs;
    Ok(SingleNode {
        exec: Executor::new(g)?,
        inputs: map,
        output: first,
    })
}

/// Tuning candidates evaluated by one task (one tuning batch each).
const CANDIDATES_PER_TASK: usize = 8;

/// Threshold tuning (spec 3.4, `SimpleTuner`). Ops are visited in order
/// (graph inputs are not ops here). For each op E, the producers of E's
/// inputs are tuned: candidates `t0 + k*step`, `k = 0..=steps`,
/// `step = (abs_max - t0)/steps`, only if `step > 0` and
/// `|abs_max - t0| > 0.01`. For each candidate, E runs alone (its weights
/// fake-quantized per channel) on the float reference activations of its
/// inputs, the tuned input fake-quantized with the candidate and the other
/// inputs with their current thresholds (an input without a threshold,
/// e.g. an integer tensor, is passed as is); the distance is the mean over
/// the tuning batches of `||ref - out||_2 / ||ref||_1` against E's float
/// output. A candidate replaces the best only when strictly better; the
/// table keeps the larger of the old and the best threshold.
///
/// Returns the number of thresholds raised.
fn tune(
    graph: &Graph,
    entries: &[TableEntry],
    abs_max: &[f64],
    thresholds: &mut [f64],
    refs: &TuneRefs,
    steps: u32,
    progress: &dyn Progress,
) -> Result<usize, PipelineError> {
    if refs.is_empty() || steps == 0 {
        return Ok(0);
    }
    let mut slot_of = vec![None; graph.value_count()];
    for (slot, e) in entries.iter().enumerate() {
        slot_of[e.value.index()] = Some(slot);
    }
    // The (op, tensor) pairs to tune, in TPU-MLIR's order.
    let mut jobs: Vec<TuneJob> = Vec::new();
    let mut tuned = vec![false; entries.len()];
    for (node_id, node) in graph.nodes() {
        let Some(&out0) = node.outputs.first() else {
            continue;
        };
        if graph.value(out0).dtype != DType::F32 {
            continue;
        }
        let mut producers: Vec<usize> = Vec::new();
        for v in node.inputs.iter().flatten() {
            if graph.constant_of(*v).is_some() || graph.value(*v).dtype != DType::F32 {
                continue;
            }
            if let Some(slot) = slot_of[v.index()]
                && !producers.contains(&slot)
            {
                producers.push(slot);
            }
        }
        if producers.is_empty() {
            continue;
        }
        let to_tune: Vec<usize> = if producers.iter().all(|&p| tuned[p]) {
            vec![producers[0]]
        } else {
            producers.iter().copied().filter(|&p| !tuned[p]).collect()
        };
        for p in to_tune {
            // A first tuning of `p` against an op that reads no other tuned
            // tensor sees only `p`'s initial threshold: it depends on no
            // other job's result.
            let independent = !tuned[p] && producers.len() == 1;
            tuned[p] = true;
            jobs.push(TuneJob {
                node: node_id,
                slot: p,
                independent,
            });
        }
    }
    let cx = TuneContext {
        graph,
        slot_of: &slot_of,
        abs_max,
        refs,
        steps,
    };
    progress.start("tuning", jobs.len());
    // The independent jobs all at once (many jobs keep both cores busy
    // where one job's few tasks would not), then every job in order.
    let initial: &[f64] = thresholds;
    let early: Vec<Option<Option<f64>>> = jobs
        .par_iter()
        .map(|job| -> Result<Option<Option<f64>>, PipelineError> {
            if !job.independent {
                return Ok(None);
            }
            let best = cx.best_threshold(job, initial)?;
            progress.advance(1);
            Ok(Some(best))
        })
        .collect::<Result<_, _>>()?;
    let mut changes = 0;
    for (job, early) in jobs.iter().zip(early) {
        let best = match early {
            Some(best) => best,
            None => {
                let best = cx.best_threshold(job, thresholds)?;
                progress.advance(1);
                best
            }
        };
        if let Some(best_th) = best
            && best_th > thresholds[job.slot]
        {
            thresholds[job.slot] = best_th;
            changes += 1;
        }
    }
    progress.finish();
    Ok(changes)
}

/// Tensor `slot` tuned against the op `node` ([`tune`]).
struct TuneJob {
    node: NodeId,
    slot: usize,
    /// Depends on no other job's result (see [`tune`]).
    independent: bool,
}

/// What every tuning job reads.
struct TuneContext<'a> {
    graph: &'a Graph,
    slot_of: &'a [Option<usize>],
    abs_max: &'a [f64],
    refs: &'a TuneRefs,
    steps: u32,
}

impl TuneContext<'_> {
    /// The best candidate threshold of `job` given the `current` thresholds
    /// (of the op's other inputs and of the tuned tensor itself), or `None`
    /// when the tensor has no candidates (spec 3.4).
    fn best_threshold(&self, job: &TuneJob, current: &[f64]) -> Result<Option<f64>, PipelineError> {
        let TuneContext {
            graph,
            slot_of,
            abs_max,
            refs,
            steps,
        } = *self;
        let (node_id, p) = (job.node, job.slot);
        let node = graph.node(node_id);
        let Some(&out0) = node.outputs.first() else {
            return Ok(None);
        };
        let t0 = current[p];
        let span = abs_max[p] - t0;
        let step = span / f64::from(steps);
        if !(step > 0.0 && span.abs() > 0.01) {
            return Ok(None);
        }
        let SingleNode {
            exec: exec1,
            inputs: map,
            output: new_out,
        } = single_node(graph, node_id)?;
        // This op's inputs and output in every tuning batch, from memory or
        // the scratch file (see `TuneRefs`).
        let mut ids: Vec<ValueId> = map.iter().map(|&(orig, _)| orig).collect();
        ids.push(out0);
        let local = refs.load(&ids)?;
        let refs: &[Values] = &local;
        let (exec1, map, new_out) = (&exec1, &map, &new_out);
        // The inputs of every tuning batch with all but the tuned one
        // already fake-quantized: they do not depend on the candidate.
        let mut base: Vec<Vec<(ValueId, Tensor, bool)>> = Vec::with_capacity(refs.len());
        for values in refs {
            let mut inputs = Vec::with_capacity(map.len());
            for &(orig, new) in map {
                let t = values.get(orig).ok_or_else(|| {
                    PipelineError::Internal(format!(
                        "tensor `{}` was not kept for tuning",
                        graph.value(orig).name
                    ))
                })?;
                let slot = slot_of[orig.index()];
                let tuned_here = slot == Some(p);
                let t = match slot {
                    Some(s) if !tuned_here && t.dtype() == DType::F32 => {
                        fake_quant_tensor(t, current[s])
                    }
                    _ => t.clone(),
                };
                inputs.push((new, t, tuned_here));
            }
            base.push(inputs);
        }
        // `||ref||_1` of every tuning batch: the same for every candidate.
        let l1s: Vec<f64> = refs
            .par_iter()
            .map(|values| -> Result<f64, PipelineError> {
                let reference = values.get(out0).ok_or_else(|| {
                    PipelineError::Internal(format!(
                        "tensor `{}` was not kept for tuning",
                        graph.value(out0).name
                    ))
                })?;
                Ok(abs_sum(reference.as_f32()?))
            })
            .collect::<Result<_, _>>()?;
        // Candidates are evaluated in groups of `CANDIDATES_PER_TASK`,
        // one task per (tuning batch, group), so that the tasks are many
        // and of equal size. Each output's distance to the reference is
        // taken right after it is computed, while it is still in cache;
        // the per-batch terms are added in batch order below, so the
        // distances do not depend on the grouping or the thread count.
        let candidates: Vec<u32> = (0..=steps).collect();
        let groups: Vec<&[u32]> = candidates.chunks(CANDIDATES_PER_TASK).collect();
        // An elementwise E whose one variable input is the tuned tensor:
        // the candidates run block by block in cache
        // ([`candidate_squared_distances`], the same distances).
        let fused = Elementwise::of(graph, node).filter(|(e, input)| {
            slot_of[input.index()] == Some(p)
                && refs.iter().all(|values| {
                    values
                        .get(*input)
                        .is_some_and(|t| t.dtype() == DType::F32 && e.fits(t.dims()))
                })
        });
        let opts = RunOptions::new(Keep::Outputs, Parallelism::Sequential);
        let tasks: Vec<(usize, usize)> = (0..refs.len())
            .flat_map(|b| (0..groups.len()).map(move |g| (b, g)))
            .collect();
        let terms: Vec<Vec<f64>> = tasks
            .par_iter()
            .map_init(
                || None,
                |spare: &mut Option<Vec<f32>>, &(b, g)| -> Result<Vec<f64>, PipelineError> {
                    let (values, inputs) = (&refs[b], &base[b]);
                    let reference = values.get(out0).ok_or_else(|| {
                        PipelineError::Internal(format!(
                            "tensor `{}` was not kept for tuning",
                            graph.value(out0).name
                        ))
                    })?;
                    let reference = reference.as_f32()?;
                    if let Some((e, input)) = &fused {
                        let x = values.get(*input).ok_or_else(|| {
                            PipelineError::Internal(format!(
                                "tensor `{}` was not kept for tuning",
                                graph.value(*input).name
                            ))
                        })?;
                        if x.as_f32()?.len() == reference.len() {
                            let ths: Vec<f64> = groups[g]
                                .iter()
                                .map(|&k| t0 + f64::from(k) * step)
                                .collect();
                            let l2 = candidate_squared_distances(
                                e,
                                x.as_f32()?,
                                x.dims(),
                                reference,
                                &ths,
                            );
                            return Ok(l2.into_iter().map(|l2| l2.sqrt() / l1s[b]).collect());
                        }
                    }
                    let mut terms = Vec::with_capacity(groups[g].len());
                    for &k in groups[g] {
                        let candidate = t0 + f64::from(k) * step;
                        let mut run_inputs = Vec::with_capacity(inputs.len());
                        for (id, t, tuned_here) in inputs {
                            let t = match (*tuned_here, t.as_f32()) {
                                (true, Ok(src)) => {
                                    // Into the previous candidate's
                                    // output buffer (an op that works in
                                    // place returns its input's buffer).
                                    let mut v = spare.take().unwrap_or_default();
                                    fake_quant_activation_into(src, &mut v, candidate);
                                    Tensor::from_f32(t.shape().clone(), v)?
                                }
                                (true, Err(_)) => fake_quant_tensor(t, candidate),
                                (false, _) => t.clone(),
                            };
                            run_inputs.push((*id, t));
                        }
                        let mut values = exec1.run(run_inputs, &opts, &mut NoHook)?;
                        let out = values.take(*new_out).ok_or_else(|| {
                            PipelineError::Internal(format!("node `{}` gave no output", node.name))
                        })?;
                        // Other kept handles (e.g. the input an
                        // in-place op wrote to) go first, so that the
                        // buffer is reused below without a copy.
                        drop(values);
                        let l2 = squared_distance(reference, out.as_f32()?);
                        terms.push(l2.sqrt() / l1s[b]);
                        if let Ok(v) = out.into_f32_vec() {
                            *spare = Some(v);
                        }
                    }
                    Ok(terms)
                },
            )
            .collect::<Result<_, _>>()?;
        let mut totals = vec![0.0f64; candidates.len()];
        for per_batch in terms.chunks(groups.len()) {
            for (total, term) in totals.iter_mut().zip(per_batch.iter().flatten()) {
                *total += term;
            }
        }
        let n = f64::from(u32::try_from(refs.len()).unwrap_or(u32::MAX));
        let distances: Vec<f64> = totals.into_iter().map(|t| t / n).collect();
        let mut best_k = 0u32;
        let mut best = distances[0];
        for (k, &d) in (0u32..).zip(&distances) {
            if d < best {
                best = d;
                best_k = k;
            }
        }
        Ok(Some(t0 + f64::from(best_k) * step))
    }
}

/// Header fields of the written tables that do not come from the run.
#[derive(Debug, Clone, PartialEq)]
pub struct TableHeader {
    /// Written after `# mlir version:`.
    pub version: String,
    /// The model path as given.
    pub mlir_file: String,
    pub time: TimeLine,
    /// `# tune number:` (the `--tune_num` value, or the tune list length).
    pub tune_number: i64,
}

/// `<path>.1`, where the untuned table goes first.
pub fn untuned_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl CalibrationOutcome {
    /// The untuned (`tuned = false`) or tuned table.
    pub fn table(&self, header: &TableHeader, tuned: bool) -> CalibrationTable {
        CalibrationTable {
            mlir_version: header.version.clone(),
            mlir_file: header.mlir_file.clone(),
            time: header.time.clone(),
            method: if tuned {
                format!("['{}']", self.method.name())
            } else {
                self.method.name().to_string()
            },
            histogram: HistogramLine::Bins(self.histogram_bin_num),
            sample_number: self.batches,
            tune_number: header.tune_number,
            rows: if tuned {
                self.rows().to_vec()
            } else {
                self.untuned_rows.clone()
            },
            ..CalibrationTable::default()
        }
    }

    /// The final table (tuned when tuning ran: the method is then written
    /// as the list repr `['kl']`, as TPU-MLIR does).
    pub fn final_table(&self, header: &TableHeader) -> CalibrationTable {
        self.table(header, self.tuned_rows.is_some())
    }

    /// Writes the tables as TPU-MLIR does (spec 2.1.1): the untuned table
    /// to `<path>.1`; with tuning the tuned table to `path` and `<path>.1`
    /// is removed, otherwise `<path>.1` is renamed to `path`. Every write is
    /// atomic, so `path` is never half-written.
    pub fn write_tables(&self, header: &TableHeader, path: &Path) -> Result<(), PipelineError> {
        let first = untuned_path(path);
        self.table(header, false).write(&first)?;
        if self.tuned_rows.is_some() {
            self.table(header, true).write(path)?;
            std::fs::remove_file(&first).map_err(|source| PipelineError::Io {
                path: first.clone(),
                source,
            })?;
        } else {
            std::fs::rename(&first, path).map_err(|source| PipelineError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }
}
