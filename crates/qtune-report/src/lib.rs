//! The quantization report of one qtune run: what the run measured, as
//! plain data that serializes to the JSON a report embeds, and the writers
//! that show it (issue 17).
//!
//! * [`Report`] and its parts: the header (command line, model, processor,
//!   samples, versions, timings), one [`Layer`] per op with its int8-vs-float
//!   similarity, |x| histograms with the thresholds of each method, weight
//!   ranges per output channel, the searches' trajectory and per-layer
//!   losses, the before/after figures of `--we` / `--bc` / `--sq`.
//! * [`html::write_html`]: one self-contained HTML file (inline CSS, inline
//!   SVG, a little plain JavaScript; nothing is fetched when it is opened).
//! * [`svg::layer_chart`]: the per-layer similarity chart alone (`--plot`).
//! * [`text::layer_table`]: the same similarity as a compact text table.
//!
//! This crate knows nothing of graphs: the data is gathered where it is
//! computed (`qtune_mixed::report`) and handed over here.

pub mod html;
pub mod svg;
pub mod text;

use serde::Serialize;

/// SQNR of identical tensors is infinite; reports store and draw it as this
/// many dB (an f32 tensor cannot be more exact than about 150 dB anyway).
pub const MAX_SQNR_DB: f64 = 150.0;

/// Errors of writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("report data: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Input(String),
}

/// Everything one report shows.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub header: Header,
    /// Every layer (op) of the model in op order.
    pub layers: Vec<Layer>,
    /// How many samples the per-layer similarities were measured on (0: not
    /// measured, e.g. model_deploy without `--test_input`).
    pub similarity_samples: usize,
    /// |x| histograms of the calibrated tensors, in op order.
    pub histograms: Vec<Histogram>,
    /// Where the histograms' samples and thresholds come from.
    pub histogram_source: String,
    /// Per-output-channel weight ranges of the Conv / MatMul layers.
    pub weights: Vec<WeightRanges>,
    pub search: Option<Search>,
    pub transforms: Vec<Transform>,
    /// Plain sentences shown under the header (what is missing and why).
    pub notes: Vec<String>,
}

/// Facts about the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Header {
    /// The tool, e.g. `run_calibration --search search_qtable`.
    pub title: String,
    pub command_line: String,
    pub model: String,
    pub processor: String,
    pub dataset: String,
    /// `label -> value` pairs: samples, layers, tensors, ...
    pub counts: Vec<Entry>,
    /// `qtune 0.1.0`, ...
    pub versions: Vec<Entry>,
    /// Stage timings in seconds, the report's own included.
    pub timings: Vec<Timing>,
    /// Files the run wrote.
    pub outputs: Vec<String>,
}

/// A labelled value of the header.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Entry {
    pub label: String,
    pub value: String,
}

impl Entry {
    pub fn new(label: impl Into<String>, value: impl ToString) -> Self {
        Entry {
            label: label.into(),
            value: value.to_string(),
        }
    }
}

/// One stage's wall time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Timing {
    pub stage: String,
    pub seconds: f64,
}

impl Timing {
    pub fn new(stage: impl Into<String>, seconds: f64) -> Self {
        Timing {
            stage: stage.into(),
            seconds,
        }
    }
}

/// Cosine and SQNR of a tensor of the quantized model against the float
/// model's, averaged over the samples.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Similarity {
    /// Plain cosine (not the searches' mapped `0.5 + 0.5 cos`).
    pub cos: f64,
    /// `10 log10(sum x^2 / sum (x - y)^2)`, capped at [`MAX_SQNR_DB`].
    pub sqnr_db: f64,
}

/// One op of the model.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Layer {
    /// Position in op order.
    pub index: usize,
    /// The op name (its first output), as the tables name it.
    pub name: String,
    /// The op type as TPU-MLIR prints it (`top.Conv`).
    pub op_type: String,
    /// The precision the deployed model runs it at (`INT8`, `F16`, ...).
    pub mode: String,
    /// Why it is not INT8, when it is not (qtable, chip, ...).
    pub float_reason: Option<String>,
    /// The calibration table's threshold of its output.
    pub threshold: Option<f64>,
    /// The whole quantized model up to this layer vs float.
    pub cumulative: Option<Similarity>,
    /// Only this layer quantized, fed the float model's inputs, vs float.
    pub isolated: Option<Similarity>,
}

/// A threshold drawn on a histogram.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Threshold {
    /// `kl`, `mse`, `max`, `percentile9999`, ...
    pub method: String,
    pub value: f64,
}

/// The histogram of |x| of one tensor.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Histogram {
    pub tensor: String,
    pub min: f64,
    pub max: f64,
    /// Bin `i` counts `|x|` in `[i w, (i + 1) w)`, `w = bin_width`.
    pub bin_width: f64,
    pub counts: Vec<u64>,
    pub thresholds: Vec<Threshold>,
    /// The threshold the run chose (the calibration table's).
    pub chosen: Option<f64>,
}

/// Weight ranges of one Conv / MatMul layer.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WeightRanges {
    pub layer: String,
    pub op_type: String,
    pub weight: String,
    /// How the processor quantizes it: `per channel` or `per tensor`.
    pub scheme: String,
    /// Per output channel.
    pub channel_min: Vec<f32>,
    pub channel_max: Vec<f32>,
    /// `max |w|` over the whole tensor.
    pub tensor_abs_max: f32,
}

impl WeightRanges {
    /// `max |w|` over the whole tensor divided by the median over the
    /// channels of `max |w|` per channel: how many times the per-tensor
    /// int8 step is coarser than a typical channel needs.
    pub fn spread(&self) -> f64 {
        let mut per: Vec<f32> = self
            .channel_min
            .iter()
            .zip(&self.channel_max)
            .map(|(lo, hi)| lo.abs().max(hi.abs()))
            .collect();
        if per.is_empty() {
            return 1.0;
        }
        per.sort_by(f32::total_cmp);
        let median = f64::from(per[per.len() / 2]);
        if median <= 0.0 {
            return 1.0;
        }
        f64::from(self.tensor_abs_max) / median
    }
}

/// What a mixed-precision search did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Search {
    /// `search_qtable`, `run_sensitive_layer`, `mix_search`, ...
    pub kind: String,
    /// The scale of every similarity of this section.
    pub scale: String,
    pub expected_cos: Option<f64>,
    /// Names of the methods whose per-layer losses are listed.
    pub methods: Vec<String>,
    /// Output similarity against the number of float layers, in the order
    /// the search tried them.
    pub trajectory: Vec<TrajectoryPoint>,
    /// Per searched layer, in op order.
    pub layers: Vec<SearchLayer>,
    /// What the per-layer losses measure.
    pub layer_loss: String,
    /// The layers the search keeps in float, in its order.
    pub float_layers: Vec<String>,
    pub all_int8_cos: Option<f64>,
    pub final_cos: Option<f64>,
}

/// One configuration a search scored.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TrajectoryPoint {
    pub float_layers: usize,
    pub cos: f64,
    pub label: String,
}

/// One layer of a search.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SearchLayer {
    pub name: String,
    pub op_type: String,
    /// One per [`Search::methods`]; `None` when not measured (resumed).
    pub losses: Vec<Option<f64>>,
    pub chosen_method: Option<String>,
    pub threshold: Option<f64>,
}

/// Before/after figures of a model transform (`--we`, `--bc`, `--sq`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Transform {
    /// `we`, `bc`, `sq`.
    pub kind: String,
    pub caption: String,
    /// What the values are (`max |w| ratio`, `cosine`, ...).
    pub quantity: String,
    pub rows: Vec<BeforeAfter>,
}

/// One row of a transform.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BeforeAfter {
    pub name: String,
    pub before: f64,
    pub after: f64,
}

impl Report {
    /// The embedded JSON (what the snapshot tests and the browser test read).
    pub fn to_json(&self) -> Result<String, ReportError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Layers with a cumulative or an isolated similarity.
    pub fn measured_layers(&self) -> impl Iterator<Item = &Layer> {
        self.layers
            .iter()
            .filter(|l| l.cumulative.is_some() || l.isolated.is_some())
    }
}

/// `sum x^2 / sum (x - y)^2` in dB, capped at [`MAX_SQNR_DB`].
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        return MAX_SQNR_DB;
    }
    if signal <= 0.0 {
        return -MAX_SQNR_DB;
    }
    (10.0 * (signal / noise).log10()).clamp(-MAX_SQNR_DB, MAX_SQNR_DB)
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), ReportError> {
    qtune_tensor::write_atomic(path, |w| std::io::Write::write_all(w, bytes)).map_err(|source| {
        ReportError::Io {
            path: path.display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_edges() {
        assert_eq!(sqnr_db(1.0, 0.0), MAX_SQNR_DB);
        assert_eq!(sqnr_db(0.0, 1.0), -MAX_SQNR_DB);
        assert!((sqnr_db(100.0, 1.0) - 20.0).abs() < 1e-12);
    }

    #[test]
    fn spread_of_weights() {
        let w = WeightRanges {
            channel_min: vec![-1.0, -2.0, -0.5],
            channel_max: vec![1.0, 0.5, 8.0],
            tensor_abs_max: 8.0,
            ..WeightRanges::default()
        };
        // Per channel 1, 2, 8: median 2.
        assert_eq!(w.spread(), 4.0);
    }
}
