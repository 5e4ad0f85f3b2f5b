//! Fuzz targets for every reader of a file a user hands qtune: the ONNX
//! importer, the Top-dialect `.mlir` reader, npz and npy, the calibration
//! table and qtable readers, and the image decoders. Each takes arbitrary
//! bytes and must return (an `Err` is fine) without panicking, aborting or
//! allocating more than the limit [`setup`] sets.
//!
//! They are plain functions so that two drivers share them: the cargo-fuzz
//! targets in `fuzz/` (libFuzzer, coverage-guided, on the stable toolchain
//! with `--sanitizer none`; see `scripts/fuzz.sh`), and this crate's test,
//! which replays every input under `corpus/<target>/` (the seeds and each
//! crash found, kept as regression inputs).

use std::path::Path;
use std::sync::Once;

use qtune_tensor::Tensor;

/// Buffers above this are refused by the size checks (a crafted file may
/// still ask for gigabytes within the machine's memory; under the fuzzer
/// that would be an out-of-memory report, not a finding).
pub const FUZZ_ALLOCATION_LIMIT: u64 = 256 << 20;

/// Sets the allocation limit once per process.
pub fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| qtune_tensor::set_allocation_limit(Some(FUZZ_ALLOCATION_LIMIT)));
}

/// A fuzz target: arbitrary bytes in, nothing out (it must not panic).
pub type Target = fn(&[u8]);

/// The targets by name, as the fuzz script and the replay test call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("onnx", fuzz_onnx),
    ("mlir", fuzz_mlir),
    ("npz", fuzz_npz),
    ("npy", fuzz_npy),
    ("cali_table", fuzz_cali_table),
    ("qtable", fuzz_qtable),
    ("image", fuzz_image),
];

/// Imports an ONNX model from memory, then infers its shapes and folds its
/// constants (which runs kernels on the file's tensors).
pub fn fuzz_onnx(data: &[u8]) {
    setup();
    let opts = qtune_onnx::ImportOptions::default();
    if let Ok(graph) =
        qtune_onnx::import_onnx_bytes(bytes::Bytes::copy_from_slice(data), None, &opts)
    {
        let _ = qtune_exec::prepare(graph, &qtune_exec::PrepareOptions::default());
    }
}

/// Reads Top-dialect text with weights made for the `top.Weight` ops it
/// declares (see [`weights_for`]), then prepares the graph.
pub fn fuzz_mlir(data: &[u8]) {
    setup();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let weights = weights_for(text);
    if let Ok((graph, _)) = qtune_ir::mlir::read_top_mlir(text, &weights, "fuzz.mlir") {
        let _ = qtune_exec::prepare(graph, &qtune_exec::PrepareOptions::default());
    }
}

/// Weights for the `top.Weight` ops of `text`, found by a line scan
/// independent of the reader: each op's result type gives the shape and its
/// `loc(#locN)` the name (through `#locN = loc("name")`). Small shapes get
/// that many elements, so that the fuzzer reaches the ops past the weight
/// check; large ones get one element, so that the count check is exercised.
pub fn weights_for(text: &str) -> Vec<(String, Tensor)> {
    let mut locs = std::collections::HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some((k, v)) = line.split_once(" = loc(\"")
            && let Some(name) = v.strip_suffix("\")")
        {
            locs.insert(k.to_string(), name.to_string());
        }
    }
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.contains("\"top.Weight\"")) {
        let Some(ty) = line.rsplit_once("-> tensor<").map(|(_, t)| t) else {
            continue;
        };
        let Some(ty) = ty.split('>').next() else {
            continue;
        };
        let dims: Option<Vec<usize>> =
            ty.split('x')
                .collect::<Vec<_>>()
                .split_last()
                .and_then(|(_, d)| {
                    d.iter()
                        .map(|x| x.parse().ok())
                        .collect::<Option<Vec<usize>>>()
                });
        let Some(loc) = line
            .rsplit_once("loc(")
            .map(|(_, l)| l.trim_end_matches(')'))
        else {
            continue;
        };
        let Some(name) = locs.get(loc) else {
            continue;
        };
        let n = dims
            .as_deref()
            .and_then(qtune_tensor::checked_numel)
            .filter(|&n| n <= 1 << 20)
            .unwrap_or(1);
        #[allow(clippy::cast_precision_loss)]
        let v: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        if let Ok(t) = Tensor::from_f32(vec![n], v) {
            out.push((name.clone(), t));
        }
    }
    out
}

/// Reads the bytes as an npz file (through a file: the reader takes a path).
pub fn fuzz_npz(data: &[u8]) {
    setup();
    let path = scratch_file("npz");
    if std::fs::write(&path, data).is_ok() {
        let _ = qtune_tensor::read_npz(&path);
    }
}

/// Decodes the bytes as one npy payload.
pub fn fuzz_npy(data: &[u8]) {
    setup();
    let _ = qtune_tensor::npy_from_bytes(data);
}

/// Parses the bytes as a calibration table and writes it back as text.
pub fn fuzz_cali_table(data: &[u8]) {
    setup();
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = qtune_quant::CalibrationTable::parse(&text, Path::new("fuzz_table")) {
        let _ = t.to_text();
        let _ = t.warnings();
    }
}

/// Parses the bytes as a qtable.
pub fn fuzz_qtable(data: &[u8]) {
    setup();
    let text = String::from_utf8_lossy(data);
    let _ = qtune_quant::parse_qtable(&text, Path::new("fuzz_qtable"));
}

/// Decodes the bytes as an image (JPEG, PNG or BMP, by content) into each
/// of the three layouts preprocessing asks for.
pub fn fuzz_image(data: &[u8]) {
    setup();
    for layout in [
        qtune_data::ColorLayout::Rgb,
        qtune_data::ColorLayout::Gray,
        qtune_data::ColorLayout::Rgba,
    ] {
        let _ = qtune_data::decode_image(data, Path::new("fuzz.img"), layout);
    }
}

/// A per-process scratch file on tmpfs when there is one.
fn scratch_file(kind: &str) -> std::path::PathBuf {
    let dir = if Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("qtune-fuzz-{kind}-{}", std::process::id()))
}
