//! `qtune detect`: boxes from a YOLOX or YOLOv8 detector on one image, the
//! counterpart of TPU-MLIR's `detect_yolov3` example.
//!
//! Running the model is kept apart from the post-processing
//! ([`qtune_vision::detect_on_outputs`]), which takes the outputs of any run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use qtune_data::{ColorLayout, PreprocessConfig, layout_for, load_image_as, preprocess};
use qtune_exec::{Keep, NoHook};
use qtune_vision::{
    Canvas, DetectParams, Detections, HeadFormat, ImageFileFormat, InputMapping, detect_on_outputs,
    draw_detections, write_image,
};

use super::preprocess_args::PreprocessArgs;
use crate::model;

/// How to read the detector's output.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    /// YOLOX when the output is [1, A, 5 + classes], YOLOv8 when it is
    /// [1, 4 + classes, A], A the anchor count of strides 8, 16, 32.
    Auto,
    /// Raw YOLOX head, one row [x, y, w, h, obj, classes...] per grid cell.
    Yolox,
    /// Decoded YOLOv8 output, one column [cx, cy, w, h, classes...] per anchor.
    Yolov8,
}

/// Detects objects in one image and prints one line per box:
/// `label score x1 y1 x2 y2`, in pixels of the original image, best first.
#[derive(clap::Args)]
pub struct Args {
    /// The detector (.onnx or .mlir) with one image input.
    model: PathBuf,
    /// The image (jpg, jpeg, png or bmp).
    #[arg(long)]
    input: PathBuf,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Output layout; `auto` recognises it from the output shape.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Minimum score of a box (objectness x class score for YOLOX).
    #[arg(long, default_value_t = 0.25)]
    conf: f32,
    /// NMS: a box whose IoU with a better box of its class exceeds this is dropped.
    #[arg(long, default_value_t = 0.45)]
    iou: f32,
    /// Class names, one per line, in output order (assets/labels has the
    /// workload detectors').
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Writes the image with the boxes drawn in class colours (.png, .jpg or .jpeg).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Nothing on stderr but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Run the detector quantized (fake quantization, as model_deploy
    /// simulates it) with these tables and processor.
    #[command(flatten)]
    quant: model::QuantArgs,
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("labels file `{}`", path.display()))?;
    let mut labels: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    while labels.last().is_some_and(|l| l.trim().is_empty()) {
        labels.pop();
    }
    Ok(labels)
}

fn preprocess_config(args: &Args, loaded: &model::LoadedModel) -> Result<PreprocessConfig> {
    super::preprocess_args::model_preprocess(&args.preprocess, loaded, &args.model, "detect")
}

fn run_inner(args: Args) -> Result<()> {
    // Fail on a bad output name before the model runs.
    if let Some(path) = &args.output {
        ImageFileFormat::from_path(path)?;
    }
    if !(0.0..=1.0).contains(&args.iou) {
        bail!("--iou {}: expected a value in 0..=1", args.iou);
    }
    let labels = match &args.labels {
        Some(p) => Some(read_labels(p)?),
        None => None,
    };
    let loaded = model::load_runnable(&args.model, &args.quant)?;
    let cfg = preprocess_config(&args, &loaded)?;
    let exec = &loaded.exec;
    let input = exec.graph().inputs[0];

    // The original image (for its size and the drawing), and the network
    // input. Gray input is decoded as gray, as the other commands do.
    let image = load_image_as(&args.input, ColorLayout::Rgb)?;
    let tensor = if layout_for(cfg.pixel_format) == ColorLayout::Rgb {
        preprocess(&image, &cfg).with_context(|| format!("image `{}`", args.input.display()))?
    } else {
        qtune_data::preprocess_file(&args.input, &cfg)?
    };
    let mapping = InputMapping::new(&cfg, image.width(), image.height())
        .with_context(|| format!("image `{}`", args.input.display()))?;

    let start = Instant::now();
    let mut results = exec.run_samples(vec![vec![(input, tensor)]], &Keep::Outputs, |_| NoHook)?;
    let (values, _) = results.pop().context("the run returned no sample")?;
    let outputs = exec.outputs_of(&values)?;
    let elapsed = start.elapsed();

    let mut params = DetectParams::default();
    params.format = match args.format {
        FormatArg::Auto => HeadFormat::Auto,
        FormatArg::Yolox => HeadFormat::Yolox,
        FormatArg::Yolov8 => HeadFormat::Yolov8,
    };
    params.conf = args.conf;
    params.iou = args.iou;
    let found = detect_on_outputs(&outputs, &params, &mapping)
        .with_context(|| format!("model `{}`", args.model.display()))?;
    let classes = found.layout.classes();
    if let (Some(labels), Some(path)) = (&labels, &args.labels)
        && labels.len() != classes
    {
        bail!(
            "labels file `{}` has {} names, but output `{}` has {classes} classes",
            path.display(),
            labels.len(),
            found.output
        );
    }
    print_boxes(&found, labels.as_deref().unwrap_or(&[]));

    if let Some(path) = &args.output {
        let mut canvas = Canvas::from_image(&image);
        draw_detections(&mut canvas, &found.boxes);
        write_image(path, &canvas)?;
    }
    if !args.quiet {
        let written = args
            .output
            .as_ref()
            .map(|p| format!("; wrote `{}`", p.display()))
            .unwrap_or_default();
        eprintln!(
            "{} box(es) from output `{}` ({}) in {:.0} ms{written}",
            found.boxes.len(),
            found.output,
            found.layout,
            elapsed.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// One line per box: label, score, then x1 y1 x2 y2 in original-image
/// pixels. The label is the first field; the numbers are the last five, so
/// a label with spaces still parses from the right.
fn print_boxes(found: &Detections, labels: &[String]) {
    for d in &found.boxes {
        let label = labels
            .get(d.class)
            .cloned()
            .unwrap_or_else(|| format!("class{}", d.class));
        let b = d.bbox;
        println!(
            "{label} {:.4} {:.1} {:.1} {:.1} {:.1}",
            d.score, b.x1, b.y1, b.x2, b.y2
        );
    }
}
