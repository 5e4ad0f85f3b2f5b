//! qtune-data against the reference `shared/workloads/tools/preprocess.py`:
//! every validation image, every model of models.toml with a preprocess table.
//!
//! Three comparisons:
//! * `jpeg_decoding_is_bit_exact_with_libjpeg_turbo`: our decoded pixels must
//!   equal PIL's (libjpeg-turbo) exactly, RGB for images/val and images/calib,
//!   libjpeg's grayscale output for images/val.
//! * `preprocessing_is_bit_exact_on_reference_pixels`: the pixels decoded by
//!   PIL (libjpeg-turbo) go through our preprocessing; the tensors must equal
//!   preprocess.py's exactly (resize, letterbox, crop, normalisation).
//! * `end_to_end_matches_within_acceptance_tolerance`: our own decoding +
//!   preprocessing, within the acceptance tolerances below (with an exact
//!   decoder and exact preprocessing the difference is in fact zero).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use qtune_data::{
    ColorLayout, Image, PreprocessConfig, PreprocessFlags, load_image_as, parse_usize_list,
    preprocess, preprocess_files,
};
use qtune_tensor::{Tensor, TensorData, read_npz};

const WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/workloads");
const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference_preprocess.py");

/// Largest allowed |ours - reference| in 0..255 pixel units, end to end: the
/// acceptance criterion of qtune's preprocessing (2 px on the 0..255 scale).
const END_TO_END_MAX_PIXEL_DIFF: f32 = 2.0;
/// Largest allowed mean |ours - reference| in pixel units, end to end.
const END_TO_END_MEAN_PIXEL_DIFF: f64 = 0.25;
/// Float slack when the tensor difference is divided back by the scale.
const PIXEL_UNIT_SLACK: f32 = 1e-3;

struct Model {
    stem: String,
    cfg: PreprocessConfig,
    reference: BTreeMap<String, Tensor>,
}

struct Fixture {
    images: Vec<PathBuf>,
    calib_images: Vec<PathBuf>,
    /// PIL's RGB pixels of `images`, keyed by file stem.
    decoded: BTreeMap<String, Tensor>,
    /// libjpeg's grayscale output for `images`.
    decoded_gray: BTreeMap<String, Tensor>,
    /// PIL's RGB pixels of `calib_images`.
    decoded_calib: BTreeMap<String, Tensor>,
    models: Vec<Model>,
}

fn workloads() -> PathBuf {
    let dir = PathBuf::from(WORKLOADS);
    assert!(
        dir.join("images/val").is_dir() && dir.join("models/models.toml").is_file(),
        "workloads not found at {}; run scripts/fetch-workloads.sh",
        dir.display()
    );
    dir
}

fn toml_str<'a>(t: &'a toml::Table, key: &str) -> &'a str {
    t.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("missing string `{key}`"))
}

fn toml_list(t: &toml::Table, key: &str) -> String {
    let items = t
        .get(key)
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("missing list `{key}`"));
    items
        .iter()
        .map(|v| match v {
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Integer(i) => i.to_string(),
            other => panic!("`{key}`: not a number: {other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The config from the [preprocess] table, via the flag parser.
fn config_from_table(model: &toml::Table) -> PreprocessConfig {
    let inputs = model["inputs"].as_array().expect("inputs");
    let shape: Vec<usize> = inputs[0]["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| usize::try_from(d.as_integer().expect("dim")).expect("dim"))
        .collect();
    let pp = model["preprocess"].as_table().expect("preprocess table");
    let mut flags = PreprocessFlags::default();
    flags
        .set("resize_dims", Some(&toml_list(pp, "resize_dims")))
        .unwrap();
    if pp["keep_aspect_ratio"]
        .as_bool()
        .expect("keep_aspect_ratio")
    {
        flags.set("keep_aspect_ratio", None).unwrap();
    }
    for key in ["pixel_format", "channel_format", "pad_type"] {
        flags.set(key, Some(toml_str(pp, key))).unwrap();
    }
    flags
        .set(
            "pad_value",
            Some(&pp["pad_value"].as_integer().expect("pad_value").to_string()),
        )
        .unwrap();
    flags.set("mean", Some(&toml_list(pp, "mean"))).unwrap();
    flags.set("scale", Some(&toml_list(pp, "scale"))).unwrap();
    PreprocessConfig::from_flags(shape.try_into().expect("4-d input"), &flags).unwrap()
}

/// The config from the table's `model_transform` command line, which must agree.
fn config_from_command_line(model: &toml::Table) -> PreprocessConfig {
    let line = toml_str(model["preprocess"].as_table().unwrap(), "model_transform");
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut flags = PreprocessFlags::default();
    let mut shape = None;
    let mut i = 0;
    while i < words.len() {
        let name = words[i];
        let value = words.get(i + 1).filter(|v| !v.starts_with("--")).copied();
        if name == "--input_shapes" {
            // The one `[[d0,d1,...]]` of a single-input model (the full
            // parser is `qtune::parse_input_shapes`, above this crate).
            let dims = value
                .unwrap()
                .trim_start_matches("[[")
                .trim_end_matches("]]");
            shape = Some(parse_usize_list("input_shapes", dims).unwrap());
        } else {
            flags.set(name, value).unwrap();
        }
        i += if value.is_some() { 2 } else { 1 };
    }
    let shape: [usize; 4] = shape.expect("--input_shapes").try_into().unwrap();
    // The command lines rely on the default channel_format (nchw).
    PreprocessConfig::from_flags(shape, &flags).unwrap()
}

/// The JPEG files of a folder, sorted.
fn jpeg_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no JPEG files in {}", dir.display());
    files
}

fn stem(path: &Path) -> &str {
    path.file_stem().unwrap().to_str().unwrap()
}

fn reference_outputs(out_dir: &Path) {
    let status = Command::new("python3")
        .arg(HELPER)
        .arg(WORKLOADS)
        .arg(out_dir)
        .status()
        .expect("cannot run python3 (needs numpy and pillow)");
    assert!(status.success(), "{HELPER} failed: {status}");
}

/// Runs the Python helper once per test binary and loads everything.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = workloads();
        let models: toml::Table = std::fs::read_to_string(dir.join("models/models.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let models = models["model"].as_table().unwrap();
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("qtune-data-ref-{}", std::process::id()));
        reference_outputs(&out_dir);
        let load = |name: &str| -> BTreeMap<String, Tensor> {
            read_npz(&out_dir.join(name)).unwrap().into_iter().collect()
        };
        let images = jpeg_files(&dir.join("images/val"));
        let calib_images = jpeg_files(&dir.join("images/calib"));
        let mut out = Vec::new();
        for (stem, model) in models {
            let model = model.as_table().unwrap();
            if !model.contains_key("preprocess") {
                continue;
            }
            let cfg = config_from_table(model);
            assert_eq!(
                cfg,
                config_from_command_line(model),
                "{stem}: table and model_transform flags disagree"
            );
            out.push(Model {
                stem: stem.clone(),
                cfg,
                reference: load(&format!("{stem}.npz")),
            });
        }
        let fixture = Fixture {
            images,
            calib_images,
            decoded: load("decoded.npz"),
            decoded_gray: load("decoded_gray.npz"),
            decoded_calib: load("decoded_calib.npz"),
            models: out,
        };
        let _ = std::fs::remove_dir_all(&out_dir);
        assert_eq!(
            fixture.models.len(),
            5,
            "expected 5 models with a preprocess table"
        );
        fixture
    })
}

#[derive(Default)]
struct DiffStats {
    max: f32,
    sum: f64,
    count: usize,
    worst: String,
}

impl DiffStats {
    /// Accumulates |a - b| / |scale[c]|, i.e. the difference in pixel units.
    fn add(&mut self, key: &str, cfg: &PreprocessConfig, ours: &Tensor, theirs: &Tensor) {
        assert_eq!(ours.dims(), theirs.dims(), "{key}");
        let plane = ours.numel() / cfg.channels();
        let (a, b) = (ours.as_f32().unwrap(), theirs.as_f32().unwrap());
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            let d = (a - b).abs() / cfg.scale[i / plane].abs();
            self.sum += f64::from(d);
            if d > self.max {
                self.max = d;
                self.worst = key.to_string();
            }
        }
        self.count += a.len();
    }
    fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// A reference image: `[h, w, 3]` RGB or `[h, w]` gray, uint8.
fn decoded_image(t: &Tensor) -> Image {
    let (h, w, layout) = match t.dims() {
        [h, w, 3] => (*h, *w, ColorLayout::Rgb),
        [h, w] => (*h, *w, ColorLayout::Gray),
        dims => panic!("decoded image of shape {dims:?}"),
    };
    let TensorData::U8(data) = t.data() else {
        panic!("decoded image is not uint8")
    };
    Image::new(w, h, layout, data.to_vec()).unwrap()
}

#[test]
fn jpeg_decoding_is_bit_exact_with_libjpeg_turbo() {
    let fx = fixture();
    let sets = [
        ("images/val", &fx.images, &fx.decoded, ColorLayout::Rgb),
        (
            "images/val",
            &fx.images,
            &fx.decoded_gray,
            ColorLayout::Gray,
        ),
        (
            "images/calib",
            &fx.calib_images,
            &fx.decoded_calib,
            ColorLayout::Rgb,
        ),
    ];
    let mut failures = Vec::new();
    for (name, paths, reference, layout) in sets {
        for path in paths {
            let key = stem(path);
            let Some(theirs) = reference.get(key) else {
                failures.push(format!("{name}/{key}: no reference pixels"));
                continue;
            };
            let theirs = decoded_image(theirs);
            let ours = match load_image_as(path, layout) {
                Ok(image) => image,
                Err(e) => {
                    failures.push(format!("{name}/{key}: {e}"));
                    continue;
                }
            };
            if (ours.width(), ours.height()) != (theirs.width(), theirs.height()) {
                failures.push(format!(
                    "{name}/{key} {layout:?}: {}x{} vs PIL {}x{}",
                    ours.width(),
                    ours.height(),
                    theirs.width(),
                    theirs.height()
                ));
            } else if ours != theirs {
                let diffs: Vec<u8> = ours
                    .data()
                    .iter()
                    .zip(theirs.data())
                    .map(|(a, b)| a.abs_diff(*b))
                    .filter(|d| *d > 0)
                    .collect();
                failures.push(format!(
                    "{name}/{key} {layout:?}: {} samples differ, max {}",
                    diffs.len(),
                    diffs.iter().max().unwrap_or(&0)
                ));
            }
        }
        println!(
            "{name} {layout:?}: {} JPEGs decoded, compared with PIL",
            paths.len()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn preprocessing_is_bit_exact_on_reference_pixels() {
    let fx = fixture();
    let mut failures = Vec::new();
    for model in &fx.models {
        for (key, pixels) in &fx.decoded {
            let ours = preprocess(&decoded_image(pixels), &model.cfg).unwrap();
            let theirs = &model.reference[key];
            if &ours != theirs {
                let mut stats = DiffStats::default();
                stats.add(key, &model.cfg, &ours, theirs);
                failures.push(format!("{} {key}: max {} px", model.stem, stats.max));
            }
        }
        println!(
            "{:<20} bit-exact on {} PIL-decoded images",
            model.stem,
            fx.decoded.len()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn end_to_end_matches_within_acceptance_tolerance() {
    let fx = fixture();
    let mut failures = Vec::new();
    for model in &fx.models {
        let mut stats = DiffStats::default();
        for item in preprocess_files(&fx.images, &model.cfg, 2).unwrap() {
            let (path, ours) = item.unwrap();
            let key = stem(&path);
            stats.add(key, &model.cfg, &ours, &model.reference[key]);
        }
        println!(
            "{:<20} max |diff| = {:.3} px ({}), mean |diff| = {:.4} px, {} images",
            model.stem,
            stats.max,
            if stats.worst.is_empty() {
                "-"
            } else {
                &stats.worst
            },
            stats.mean(),
            fx.images.len()
        );
        if stats.max > END_TO_END_MAX_PIXEL_DIFF + PIXEL_UNIT_SLACK
            || stats.mean() > END_TO_END_MEAN_PIXEL_DIFF
        {
            failures.push(format!(
                "{}: max {} (limit {END_TO_END_MAX_PIXEL_DIFF}), mean {} (limit {END_TO_END_MEAN_PIXEL_DIFF})",
                model.stem,
                stats.max,
                stats.mean(),
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn streaming_keeps_order_and_does_not_depend_on_threads() {
    let fx = fixture();
    let cfg = &fx.models[0].cfg;
    let mut paths: Vec<PathBuf> = fx.images.iter().take(7).cloned().collect();
    paths.insert(3, PathBuf::from("/nonexistent/missing_image.jpg"));
    let run = |threads| -> Vec<Result<(PathBuf, Tensor), String>> {
        preprocess_files(&paths, cfg, threads)
            .unwrap()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    };
    let one = run(1);
    assert_eq!(one.len(), paths.len());
    for (i, (path, result)) in paths.iter().zip(&one).enumerate() {
        match result {
            Ok((p, _)) => assert_eq!(p, path),
            Err(e) => {
                assert_eq!(i, 3);
                assert!(e.contains("missing_image.jpg"), "{e}");
            }
        }
    }
    assert_eq!(one, run(3));
    assert_eq!(one, run(0));
}
