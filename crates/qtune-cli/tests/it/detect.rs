//! `qtune detect` on the two workload detectors, against an ONNX Runtime +
//! numpy reference that decodes the same way (tests/detect_ref.py).

use std::path::{Path, PathBuf};

use crate::common::*;

/// Box corners may differ by this many pixels from the reference (float
/// differences between the executors, scaled up by the letterbox).
const PIXEL_TOLERANCE: f32 = 1.0;
/// Scores may differ by this much from the reference.
const SCORE_TOLERANCE: f32 = 1e-3;

fn labels(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/labels")).join(name)
}

struct Case {
    model: &'static str,
    image: &'static str,
    labels: &'static str,
    /// The models.toml preprocessing, as flags.
    flags: &'static [&'static str],
    output: &'static str,
}

const CASES: &[Case] = &[
    Case {
        model: "yolov8n_320",
        image: "ultralytics_bus.jpg",
        labels: "nudenet_classes.txt",
        flags: YOLOV8_FLAGS,
        output: "yolov8_bus.png",
    },
    Case {
        model: "yolov8n_320",
        image: "skimage_astronaut.jpg",
        labels: "nudenet_classes.txt",
        flags: YOLOV8_FLAGS,
        output: "yolov8_astronaut.jpg",
    },
    Case {
        model: "yolox_det416",
        image: "ultralytics_bus.jpg",
        labels: "yolox_det416_classes.txt",
        flags: YOLOX_FLAGS,
        output: "yolox_bus.jpg",
    },
];

#[derive(Debug, Clone, PartialEq)]
struct PrintedBox {
    label: String,
    score: f32,
    corners: [f32; 4],
}

/// Parses `label score x1 y1 x2 y2` lines, reading the numbers from the right.
fn parse_boxes(text: &str) -> Vec<PrintedBox> {
    text.lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.rsplitn(6, ' ').collect();
            assert_eq!(fields.len(), 6, "not a box line: {line:?}");
            fields.reverse();
            let num = |s: &str| s.parse::<f32>().unwrap_or_else(|_| panic!("{line:?}"));
            PrintedBox {
                label: fields[0].to_string(),
                score: num(fields[1]),
                corners: [
                    num(fields[2]),
                    num(fields[3]),
                    num(fields[4]),
                    num(fields[5]),
                ],
            }
        })
        .collect()
}

fn reference_boxes(case: &Case) -> Vec<PrintedBox> {
    let python_ok = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, numpy, PIL"])
        .output()
        .is_ok_and(|o| o.status.success());
    // The oracle is required: .ci/run installs it, so a missing one is a
    // failure, not a skip.
    assert!(
        python_ok,
        "python3 with onnxruntime, numpy and pillow is required for this test (pip install onnxruntime numpy pillow)"
    );
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/detect_ref.py"));
    let w = workloads();
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--workloads")
        .arg(&w)
        .args(["--model", case.model])
        .arg("--image")
        .arg(w.join("images/val").join(case.image))
        .arg("--labels")
        .arg(labels(case.labels))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    parse_boxes(&stdout_of(&out))
}

/// Every box of `got` pairs with one box of `want` of the same label within
/// the tolerances; the differences are listed otherwise.
fn mismatches(got: &[PrintedBox], want: &[PrintedBox]) -> Vec<String> {
    if got.len() != want.len() {
        return vec![format!(
            "{} boxes, the reference has {}:\n{got:#?}\n{want:#?}",
            got.len(),
            want.len()
        )];
    }
    let mut used = vec![false; want.len()];
    let mut problems = Vec::new();
    for g in got {
        let close = |w: &PrintedBox| {
            w.label == g.label
                && (w.score - g.score).abs() <= SCORE_TOLERANCE
                && w.corners
                    .iter()
                    .zip(g.corners)
                    .all(|(a, b)| (a - b).abs() <= PIXEL_TOLERANCE)
        };
        match (0..want.len()).find(|&i| !used[i] && close(&want[i])) {
            Some(i) => used[i] = true,
            None => problems.push(format!("no reference box near {g:?} in {want:#?}")),
        }
    }
    problems
}

fn run_detect(case: &Case, dir: &Path) -> std::process::Output {
    qtune()
        .arg("detect")
        .arg(model(case.model))
        .arg("--input")
        .arg(workloads().join("images/val").join(case.image))
        .args(case.flags)
        .arg("--labels")
        .arg(labels(case.labels))
        .arg("-o")
        .arg(dir.join(case.output))
        .output()
        .unwrap()
}

#[test]
fn detect_matches_onnxruntime_and_draws_on_the_original() {
    let dir = scratch("detect_ort");
    let mut failures = Vec::new();
    for case in CASES {
        let name = format!("{} on {}", case.model, case.image);
        let out = run_detect(case, &dir);
        if !out.status.success() {
            failures.push(format!("{name}: {}", stderr_of(&out)));
            continue;
        }
        let got = parse_boxes(&stdout_of(&out));
        let want = reference_boxes(case);
        if want.is_empty() {
            failures.push(format!(
                "{name}: the reference finds no box; pick another photo"
            ));
        }
        failures.extend(
            mismatches(&got, &want)
                .into_iter()
                .map(|m| format!("{name}: {m}")),
        );

        let original =
            qtune_data::load_image(workloads().join("images/val").join(case.image)).unwrap();
        let drawn = match qtune_data::load_image(dir.join(case.output)) {
            Ok(img) => img,
            Err(e) => {
                failures.push(format!("{name}: output image: {e}"));
                continue;
            }
        };
        if (drawn.width(), drawn.height()) != (original.width(), original.height()) {
            failures.push(format!(
                "{name}: output image is {}x{}, the input {}x{}",
                drawn.width(),
                drawn.height(),
                original.width(),
                original.height()
            ));
        }
        // PNG is lossless: the top-left corner of every box is in its class
        // colour (the best box is drawn last, so check that one).
        if case.output.ends_with(".png")
            && let Some(best) = got.first()
        {
            let names = std::fs::read_to_string(labels(case.labels)).unwrap();
            let class = names.lines().position(|l| l == best.label).unwrap();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (x, y) = (best.corners[0] as usize, best.corners[1] as usize);
            let at = (y * drawn.width() + x) * 3;
            let pixel = &drawn.data()[at..at + 3];
            if pixel != qtune_vision::class_color(class) {
                failures.push(format!(
                    "{name}: pixel ({x}, {y}) is {pixel:?}, not the colour of class {class}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn detect_names_an_output_it_cannot_read() {
    let demo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/demo"));
    let out = qtune()
        .arg("detect")
        .arg(demo.join("efficientnet_lite0.onnx"))
        .arg("--input")
        .arg(demo.join("images/darknet_dog.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("`logits`") && err.contains("[1, 1000]") && err.contains("YOLOv8"),
        "{err}"
    );

    let case = &CASES[0];
    let out = qtune()
        .arg("detect")
        .arg(model(case.model))
        .arg("--input")
        .arg(workloads().join("images/val").join(case.image))
        .args(case.flags)
        .args(["--format", "yolox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("`output0`")
            && err.contains("[1, 22, 2100]")
            && err.contains("--format yolox"),
        "{err}"
    );
}

#[test]
fn detect_rejects_a_bad_output_name_and_mismatched_labels() {
    let dir = scratch("detect_args");
    let case = &CASES[0];
    let base = || {
        let mut cmd = qtune();
        cmd.arg("detect")
            .arg(model(case.model))
            .arg("--input")
            .arg(workloads().join("images/val").join(case.image))
            .args(case.flags);
        cmd
    };
    let out = base()
        .arg("-o")
        .arg(dir.join("boxes.gif"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("boxes.gif"), "{}", stderr_of(&out));
    assert!(!dir.join("boxes.gif").exists());

    let out = base()
        .arg("--labels")
        .arg(labels("yolox_det416_classes.txt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("1 names") && err.contains("18 classes"),
        "{err}"
    );
}
