//! `--report`, `--plot` and the per-layer text table: reports of
//! run_calibration, run_qtable, model_deploy and `qtune report` on
//! MobileNetV2, each opened in headless Chromium (tests/browser_check.py:
//! no console error, every chart drew the points its data calls for, the
//! layer selector and the chart's points work, no network request), with a
//! screenshot saved next to the report.

use std::path::{Path, PathBuf};

use qtune_tensor::{read_npz, write_npz};

use crate::common::{model, preprocess_flags, qtune, run_ok, scratch, stdout_of, tool, workloads};

/// The loss table prints 6 decimals.
const LOSS_TABLE_ROUNDING: f64 = 1e-6;

/// run_qtable compares with the model at F16, the report with F32: the
/// mapped cosines differ by the F16 rounding of the reference, and the loss
/// table's 6 decimals.
const F16_REFERENCE_COS: f64 = 1e-4;

/// Float tensors from model_transform's run and from the report's own
/// float run differ by float rounding at most.
const SAME_FLOAT_REFERENCE_COS: f64 = 1e-5;

/// A report of a 150-layer model must stay light enough to mail.
const MAX_REPORT_BYTES: u64 = 3 << 20;

fn browser_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser_check.py"
    ))
}

/// Opens `html` in Chromium and checks it; the screenshot goes beside it.
fn check_in_browser(html: &Path) -> String {
    let png = html.with_extension("png");
    let out = std::process::Command::new("python3")
        .arg(browser_script())
        .arg(html)
        .arg(&png)
        .output()
        .expect("python3");
    let text = stdout_of(&out);
    assert!(
        out.status.success(),
        "{}: the browser check failed:\n{text}{}",
        html.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let shot = std::fs::read(&png).expect("screenshot");
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 20_000,
        "{}",
        png.display()
    );
    let size = std::fs::metadata(html).unwrap().len();
    assert!(
        size < MAX_REPORT_BYTES,
        "{} is {size} bytes",
        html.display()
    );
    text
}

/// The embedded JSON of a report.
fn embedded(html: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(html).unwrap();
    let start = text.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
    let end = start + text[start..].find("</script>").unwrap();
    serde_json::from_str(&text[start..end]).unwrap()
}

#[test]
fn reports_open_in_a_browser() {
    let dir = scratch("report_browser");
    let name = "mobilenetv2_nsfw";
    let onnx = model(name);
    let images = workloads().join("images/calib");
    // run_calibration with a report and a plot; no table printed with --report.
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg(&onnx)
            .args(preprocess_flags(name))
            .arg("--dataset")
            .arg(&images)
            .args(["--input_num", "4", "--tune_num", "1", "-o", "cali"])
            .args(["--report", "cal.html", "--plot", "cal.svg"]),
    );
    assert!(!stdout_of(&out).contains("per-layer similarity"));
    let cal = embedded(&dir.join("cal.html"));
    let layers = cal["layers"].as_array().unwrap();
    let measured = layers.iter().filter(|l| !l["cumulative"].is_null()).count();
    assert!(measured > 40, "{measured} layers measured");
    assert_eq!(cal["similarity_samples"], 1);
    assert!(cal["histograms"].as_array().unwrap().len() > 40);
    check_in_browser(&dir.join("cal.html"));
    // The plot is the same chart, standalone: as many points as measured.
    let svg = std::fs::read_to_string(dir.join("cal.svg")).unwrap();
    assert!(svg.starts_with("<?xml"));
    let iso = layers.iter().filter(|l| !l["isolated"].is_null()).count();
    assert_eq!(svg.matches("class=\"pt\"").count(), 2 * (measured + iso));

    // Without --report the similarity is a text table at the end of the run.
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg(&onnx)
            .args(preprocess_flags(name))
            .arg("--dataset")
            .arg(&images)
            .args(["--input_num", "2", "--tune_num", "0", "-o", "cali2"])
            .args(["--plot", "cal.png"]),
    );
    // The PNG plot is the same chart rasterized at 2 pixels per SVG unit.
    let png = std::fs::read(dir.join("cal.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    let svg_attr = |name: &str| -> f64 {
        let at = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[at..at + svg[at..].find('"').unwrap()].parse().unwrap()
    };
    assert_eq!(
        (be(16) as f64, be(20) as f64),
        (2.0 * svg_attr("width"), 2.0 * svg_attr("height"))
    );
    let text = stdout_of(&out);
    assert!(
        text.contains("per-layer similarity to the float model"),
        "{text}"
    );
    assert!(text.contains("lowest isolated SQNR:"), "{text}");
    // ... and nothing with --quiet.
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg(&onnx)
            .args(preprocess_flags(name))
            .arg("--dataset")
            .arg(&images)
            .args(["--input_num", "2", "--tune_num", "0", "-o", "cali3", "-q"]),
    );
    assert!(stdout_of(&out).is_empty());

    // model_deploy on one golden sample.
    let arrays = read_npz(&workloads().join(format!("golden/{name}/input.npz"))).unwrap();
    let one: Vec<_> = arrays
        .iter()
        .map(|(n, t)| (n.clone(), t.slice_outer(0, 1).unwrap()))
        .collect();
    write_npz(&dir.join("in.npz"), &one).unwrap();
    run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .arg("--mlir")
            .arg(&onnx)
            .args(["--quantize", "INT8", "--calibration_table", "cali"])
            .args(["--test_input", "in.npz", "--model", "m.onnx", "--quiet"])
            .args(["--report", "deploy.html"]),
    );
    let dep = embedded(&dir.join("deploy.html"));
    assert_eq!(dep["similarity_samples"], 1);
    check_in_browser(&dir.join("deploy.html"));
    // The report is measured beside the deploy's own runs: its simulation
    // run carries the report's hook, and the outputs it writes are the same
    // bytes as without a report.
    let with_report = std::fs::read(dir.join("m_tpu_outputs.npz")).unwrap();
    run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .arg("--mlir")
            .arg(&onnx)
            .args(["--quantize", "INT8", "--calibration_table", "cali"])
            .args(["--test_input", "in.npz", "--model", "m.onnx", "--quiet"]),
    );
    assert_eq!(
        with_report,
        std::fs::read(dir.join("m_tpu_outputs.npz")).unwrap()
    );
    // With --test_reference holding every tensor (model_transform's
    // --test_result of the float model), the report takes the float tensors
    // from it instead of running the float model: the same similarities,
    // up to the float rounding of the two float runs.
    run_ok(
        tool("model_transform")
            .current_dir(&dir)
            .args(["--model_name", "nsfw", "--model_def"])
            .arg(&onnx)
            .args(["--test_input", "in.npz", "--test_result", "top.npz"])
            .args(["--mlir", "nsfw.mlir"]),
    );
    run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .args(["--mlir", "nsfw.mlir", "--quantize", "INT8"])
            .args(["--calibration_table", "cali", "--test_input", "in.npz"])
            .args(["--test_reference", "top.npz", "--tolerance", "0.5,0.0"])
            .args(["--model", "r.onnx", "--quiet", "--report", "ref.html"]),
    );
    let by_ref = embedded(&dir.join("ref.html"));
    let notes = by_ref["notes"].to_string();
    assert!(notes.contains("--test_reference"), "{notes}");
    let mut compared = 0;
    for (a, b) in dep["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(by_ref["layers"].as_array().unwrap())
    {
        assert_eq!(a["name"], b["name"]);
        for kind in ["cumulative", "isolated"] {
            if let (Some(x), Some(y)) = (a[kind]["cos"].as_f64(), b[kind]["cos"].as_f64()) {
                assert!(
                    (x - y).abs() < SAME_FLOAT_REFERENCE_COS,
                    "{} {kind}: float run {x}, --test_reference {y}",
                    a["name"]
                );
                compared += 1;
            } else {
                assert_eq!(a[kind].is_null(), b[kind].is_null(), "{}", a["name"]);
            }
        }
    }
    assert!(compared > 80, "only {compared} similarities compared");

    // run_qtable: a search with a trajectory and per-layer losses.
    run_ok(
        tool("run_qtable")
            .current_dir(&dir)
            .arg(&onnx)
            .args(preprocess_flags(name))
            .arg("--dataset")
            .arg(&images)
            .args(["--calibration_table", "cali", "--input_num", "1"])
            // On the canonical graph (BatchNorm folded, Relu fused) every
            // layer of this model keeps a mapped cos above 0.99, so the
            // bound sits among the worst layers' (0.990 to 0.996) to make
            // the search put some in float.
            .args(["--min_layer_cos", "0.996", "--expected_cos", "0.99999"])
            .args(["-o", "qtable", "-q", "--report", "qtable.html"]),
    );
    let q = embedded(&dir.join("qtable.html"));
    let search = &q["search"];
    assert_eq!(search["kind"], "run_qtable");
    assert!(search["trajectory"].as_array().unwrap().len() >= 2);
    let qtable_text = std::fs::read_to_string(dir.join("qtable")).unwrap();
    for f in search["float_layers"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        assert!(qtable_text.contains(f), "{f} not in the qtable");
        // The report's layer rows mark it as put in float by the qtable.
        let row = q["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == f)
            .unwrap();
        assert_eq!(row["float_reason"], "qtable", "{f}");
    }
    check_in_browser(&dir.join("qtable.html"));
    // The search's own per-layer similarity (its loss table: mapped cos of
    // the layer's output in the configuration reached) against the
    // cumulative cosine of the run_calibration report, computed separately
    // (its own runs, F32 reference instead of the search's F16 one) for the
    // all-int8 model on the same sample: equal for every layer visited
    // before the first float change, i.e. up to the first layer below
    // --min_layer_cos (0.996).
    let loss_table = std::fs::read_to_string(dir.join("full_loss_table.txt")).unwrap();
    let search_cos: std::collections::HashMap<String, f64> = loss_table
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("Layer: ")?.1;
            let (name, cos) = rest.split_once("Cos: ")?;
            Some((name.trim().to_string(), cos.trim().parse().ok()?))
        })
        .collect();
    let rows = cal["layers"].as_array().unwrap();
    let mut compared = 0;
    for visited in search["layers"].as_array().unwrap() {
        let name = visited["name"].as_str().unwrap();
        let c = search_cos[name];
        // The report embeds the search's loss as 1 - cos.
        let embedded_loss = visited["losses"][0].as_f64().unwrap();
        assert!(
            (embedded_loss - (1.0 - c)).abs() < LOSS_TABLE_ROUNDING,
            "{name}"
        );
        let row = rows.iter().find(|l| l["name"] == name).unwrap();
        if let Some(cum) = row["cumulative"]["cos"].as_f64() {
            let mapped = 0.5 + 0.5 * cum;
            assert!(
                (mapped - c).abs() < F16_REFERENCE_COS,
                "{name}: report cumulative (mapped) {mapped}, run_qtable {c}"
            );
            compared += 1;
        }
        if c < 0.996 {
            break;
        }
    }
    assert!(compared >= 3, "only {compared} layers compared");

    // qtune report afterwards, with the qtable.
    run_ok(
        qtune()
            .current_dir(&dir)
            .arg("report")
            .arg(&onnx)
            .args(preprocess_flags(name))
            .arg("--dataset")
            .arg(&images)
            .args(["--calibration_table", "cali", "--quantize_table", "qtable"])
            .args(["--input_num", "1", "-o", "after.html", "-q"]),
    );
    check_in_browser(&dir.join("after.html"));
}

#[test]
fn plot_must_be_svg_or_png() {
    let dir = scratch("report_plot_jpg");
    let out = tool("run_calibration")
        .current_dir(&dir)
        .arg(model("mobilenetv2_nsfw"))
        .arg("--dataset")
        .arg(workloads().join("images/calib"))
        .args(["--input_num", "1", "-o", "c", "--plot", "chart.jpg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chart.jpg") && err.contains(".svg or .png"),
        "{err}"
    );
    assert!(!dir.join("c").exists(), "nothing runs after a bad --plot");
}
