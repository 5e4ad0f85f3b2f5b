//! The mixed-precision searches: the seed's commands verbatim (workload
//! paths), incremental evaluation against full re-evaluation, thread-count
//! determinism and `--resume`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;

use super::common::{
    YOLOX_FLAGS, model, run_ok, scratch, stderr_of, stdout_of, tool, transform_mobilenet, workloads,
};
use super::weight_transforms::cosine;

fn calib() -> PathBuf {
    workloads().join("images/calib")
}

/// The seed's example `post_process_func.py`.
fn write_post_process(dir: &Path) {
    std::fs::write(
        dir.join("post_process_func.py"),
        "def PostProcess(data):\n    print(\"in post process\")\n    return data\n",
    )
    .unwrap();
}

/// `name threshold` rows of a calibration table.
fn rows(path: &Path) -> Vec<(String, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect()
}

/// `name mode` rows of a qtable.
fn qtable_rows(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect()
}

fn cos_of(stdout: &str, prefix: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
}

#[test]
fn seed_search_qtable_on_mobilenet_bm1684() {
    let dir = scratch("search_qtable_seed");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    write_post_process(&dir);
    let start = Instant::now();
    // The seed's command (its tool is spelled `run_calibration.py`).
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "100"])
            .args(["--inference_num", "30"])
            .args(["--expected_cos", "0.99"])
            .args(["--quantize_method_list", "KL,MSE"])
            .args(["--search", "search_qtable"])
            .args(["--transformer", "False"])
            .args(["--processor", "bm1684"])
            .args(["--post_process", "post_process_func.py"])
            .args(["--quantize_table", "mobilenet_v2_qtable"])
            .args(["--calibration_table", "mobilenet_v2_cali_table"]),
    );
    let elapsed = start.elapsed();
    let stdout = stdout_of(&out);
    let stderr = stderr_of(&out);
    // The script's prints go to stderr, the protocol is intact.
    assert!(stderr.contains("in post process"), "{stderr}");
    for line in [
        "sensitive layer, loss is",
        ">>>run result:",
        "Output mix quantization table to mobilenet_v2_qtable",
        "total time:",
        "success search qtable",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let int8 = cos_of(&stdout, "int8 outputs_cos:");
    let mix = cos_of(&stdout, "mix model outputs_cos:");
    // BM1684's per-tensor power-of-two weights lose accuracy; the mixed
    // model must be strictly better.
    assert!(int8 < 0.99, "all-int8 already meets the target: {int8}");
    assert!(mix > int8, "mix {mix} <= int8 {int8}");
    let layers = qtable_rows(&dir.join("mobilenet_v2_qtable"));
    assert!(!layers.is_empty());
    assert!(layers.iter().all(|(_, m)| m == "F32"), "{layers:?}");
    let log = std::fs::read_to_string(dir.join("Search_Qtable")).unwrap();
    assert!(
        log.starts_with("INFO:root:quantize_method_list =['KL', 'MSE']"),
        "{log}"
    );
    assert!(log.contains("INFO:root:adjust layer "), "{log}");
    assert!(log.contains(", with method KL, and threshlod "), "{log}");
    // Every method's tables, the -o table (mse) and the best thresholds.
    for f in [
        "mobilenet_v2_cali_table_kl.1",
        "mobilenet_v2_cali_table_kl_tune",
        "mobilenet_v2_cali_table_mse_tune",
        "mobilenet_v2_cali_table",
        "new_cali_table.txt",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let best = rows(&dir.join("new_cali_table.txt"));
    assert_eq!(best.len(), rows(&dir.join("mobilenet_v2_cali_table")).len());
    // The seed's next step: deploy with the new table and the qtable.
    run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .args(["--mlir", "mobilenet_v2.mlir", "--quantize", "INT8"])
            .args(["--processor", "bm1684"])
            .args(["--calibration_table", "new_cali_table.txt"])
            .args(["--quantize_table", "mobilenet_v2_qtable"])
            .args(["--model", "mobilenet_v2_bm1684_int8_mix.onnx"]),
    );
    crate::canonical::assert_qtable_floats_exactly(
        &dir,
        "mobilenet_v2.mlir",
        "new_cali_table.txt",
        "mobilenet_v2_qtable",
        "bm1684",
    );
    eprintln!(
        "search_qtable (seed command) took {:.1} s",
        elapsed.as_secs_f64()
    );
}

#[test]
fn seed_search_threshold_picks_the_best_method() {
    let dir = scratch("search_threshold_seed");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    // The seed's case 1, verbatim.
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "100"])
            .args(["--processor", "bm1684x"])
            .args(["--search", "search_threshold"])
            .args(["--inference_num", "30"])
            .args(["-o", "cali_table"]),
    );
    let log = std::fs::read_to_string(dir.join("Search_Threshold")).unwrap();
    let chosen = log
        .lines()
        .find_map(|l| l.strip_prefix("INFO:root:optimal_method_name: "))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    assert!(
        log.contains("INFO:root:cos similarity scores: {'kl': "),
        "{log}"
    );
    // The choice is the argmax of the logged scores (the first of equals,
    // as Python's max), recomputed here from the scores themselves.
    let scores: Vec<(String, f64)> = log
        .lines()
        .find_map(|l| l.strip_prefix("INFO:root:cos similarity scores: {"))
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{log}"))
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(": ").unwrap();
            (k.trim_matches('\'').to_string(), v.parse().unwrap())
        })
        .collect();
    assert!(scores.len() >= 3, "{scores:?}");
    let mut argmax = 0;
    for (i, (_, v)) in scores.iter().enumerate() {
        if *v > scores[argmax].1 {
            argmax = i;
        }
    }
    assert_eq!(chosen, scores[argmax].0, "not the best score: {scores:?}");
    // -o holds the chosen method's tuned table.
    let table = rows(&dir.join("cali_table"));
    let chosen_table = rows(&dir.join(format!("cali_table_{chosen}_tune")));
    assert_eq!(table, chosen_table);
    assert!(stdout_of(&out).contains(&format!("search_threshold: {chosen} chosen")));
    // An existing table is kept as is (TPU-MLIR's cache rule).
    let before = std::fs::read(dir.join("cali_table")).unwrap();
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "10"])
            .args(["--search", "search_threshold"])
            .args(["-o", "cali_table"]),
    );
    assert!(
        stdout_of(&out).contains("already exists"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(before, std::fs::read(dir.join("cali_table")).unwrap());
}

/// model_transform + run_calibration of yolox_det416 (the seed's yolov3
/// steps 0 and 1 with this workload).
fn yolox_with_table(dir: &Path) {
    run_ok(
        tool("model_transform")
            .current_dir(dir)
            .args(["--model_name", "yolox", "--model_def"])
            .arg(model("yolox_det416"))
            .args(["--input_shapes", "[[1,3,416,416]]"])
            .args(YOLOX_FLAGS)
            .args(["--mlir", "yolox.mlir"]),
    );
    run_ok(
        tool("run_calibration")
            .current_dir(dir)
            .arg("yolox.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "100", "-o", "yolox_cali_table"]),
    );
}

#[test]
fn seed_run_qtable_on_yolox_and_incremental_equals_full() {
    let dir = scratch("run_qtable_seed");
    yolox_with_table(&dir);
    let start = Instant::now();
    // The seed's run_qtable command.
    let out = run_ok(
        tool("run_qtable")
            .current_dir(&dir)
            .arg("yolox.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--calibration_table", "yolox_cali_table"])
            .args(["--processor", "bm1684x"])
            .args(["--min_layer_cos", "0.999"])
            .args(["--expected_cos", "0.9999"])
            .args(["-o", "yolox_qtable"]),
    );
    let elapsed = start.elapsed();
    let stdout = stdout_of(&out);
    let int8 = cos_of(&stdout, "int8 outputs_cos:");
    let mix = cos_of(&stdout, "mix model outputs_cos:");
    assert!(mix > int8, "mix {mix} <= int8 {int8}\n{stdout}");
    assert!(stdout.contains("Output mix quantization table to yolox_qtable"));
    let qtable = std::fs::read_to_string(dir.join("yolox_qtable")).unwrap();
    assert!(
        qtable.starts_with("# op_name   quantize_mode\n"),
        "{qtable}"
    );
    assert!(
        qtable_rows(&dir.join("yolox_qtable"))
            .iter()
            .all(|(_, m)| m == "F16")
    );
    let loss = std::fs::read_to_string(dir.join("full_loss_table.txt")).unwrap();
    assert!(
        loss.starts_with("# platform: bm1684x  mix_mode: F16\n###\nNo.0   : Layer: "),
        "{loss}"
    );
    // Rows ascend by cos.
    let cos: Vec<f64> = loss
        .lines()
        .filter_map(|l| l.rsplit_once("Cos: ").and_then(|(_, c)| c.parse().ok()))
        .collect();
    assert!(cos.windows(2).all(|w| w[0] <= w[1]), "{loss}");
    // With no cache every configuration is evaluated in full: the same
    // files, byte for byte (3 samples keep the uncached run short).
    let small = |cache: &str, qtable: &str, loss: &str| {
        run_ok(
            tool("run_qtable")
                .current_dir(&dir)
                .arg("yolox.mlir")
                .arg("--dataset")
                .arg(calib())
                .args(["--calibration_table", "yolox_cali_table"])
                .args(["--processor", "bm1684x", "--input_num", "3"])
                .args(["--min_layer_cos", "0.999", "--expected_cos", "0.9999"])
                .args(["--memory_mb", cache, "--loss_table", loss, "-q"])
                .args(["-o", qtable]),
        );
        (
            std::fs::read(dir.join(qtable)).unwrap(),
            std::fs::read(dir.join(loss)).unwrap(),
        )
    };
    // The qtable names canonical ops, and deploying it floats exactly them.
    crate::canonical::assert_qtable_floats_exactly(
        &dir,
        "yolox.mlir",
        "yolox_cali_table",
        "yolox_qtable",
        "bm1684x",
    );
    let cached = small("4096", "q_cached", "loss_cached.txt");
    let chosen = qtable_rows(&dir.join("q_cached"));
    assert!(!chosen.is_empty(), "no float layer chosen on 3 samples");
    assert!(chosen.iter().all(|(_, m)| m == "F16"), "{chosen:?}");
    assert_eq!(cached, small("0", "q_full", "loss_full.txt"));
    eprintln!(
        "run_qtable (seed command) took {:.1} s",
        elapsed.as_secs_f64()
    );
}

/// Kills `child` once its search journal holds `n` finished layers (asserting
/// that it got that far).
fn kill_after_journal_layers(child: &mut std::process::Child, journal: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let records = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().filter(|l| l.starts_with("layer\t")).count())
            .unwrap_or(0)
    };
    while records(journal) < n && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(records(journal) >= n, "the search ended before {n} layers");
}

fn sensitive(dir: &Path, extra: &[&str], qtable: &str) -> Command {
    let mut cmd = tool("run_sensitive_layer");
    cmd.current_dir(dir)
        .arg("mobilenet_v2.mlir")
        .arg("--dataset")
        .arg(calib())
        .args(["--input_num", "20", "--inference_num", "4"])
        .args(["--calibration_table", "mobilenet_v2_cali_table"])
        .args(["--processor", "bm1684", "--no_time", "-q"])
        .args(extra)
        .args(["-o", qtable]);
    cmd
}

/// The files a sensitive-layer search writes, to compare runs.
fn outputs(dir: &Path, qtable: &str) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join(qtable)).unwrap(),
        std::fs::read(dir.join("new_cali_table.txt")).unwrap(),
    )
}

#[test]
fn seed_run_sensitive_layer_threads_cache_and_resume() {
    let dir = scratch("sensitive_seed");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    write_post_process(&dir);
    run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "100", "-o", "mobilenet_v2_cali_table"]),
    );
    // The seed's command.
    let out = run_ok(
        tool("run_sensitive_layer")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "100", "--inference_num", "30"])
            .args(["--calibration_table", "mobilenet_v2_cali_table"])
            .args(["--processor", "bm1684"])
            .args(["--post_process", "post_process_func.py"])
            .args(["-o", "mobilenet_v2_qtable"]),
    );
    let stdout = stdout_of(&out);
    assert!(
        stdout.contains("success sensitive layer search"),
        "{stdout}"
    );
    assert!(stdout.contains("the layer "), "{stdout}");
    let log = std::fs::read_to_string(dir.join("SensitiveLayerSearch")).unwrap();
    // The qtable holds the 5 layers of largest loss, each layer's loss being
    // the smallest of its methods' trial losses: recomputed here from every
    // trial's logged loss, not from the search's own ranking.
    let mut losses: Vec<(String, f64)> = Vec::new();
    let mut current: Option<(String, f64)> = None;
    for l in log.lines() {
        if let Some(rest) = l.strip_prefix("INFO:root:adjust layer ") {
            let name = rest.split(" th, with method ").next().unwrap().to_string();
            match &current {
                Some((n, _)) if *n == name => {}
                _ => {
                    losses.extend(current.take());
                    current = Some((name, f64::INFINITY));
                }
            }
        } else if let Some(v) = l.strip_prefix("INFO:root:outputs_cos_los = ") {
            let c = current.as_mut().expect("a loss before its layer");
            c.1 = c.1.min(v.parse::<f64>().unwrap());
        }
    }
    losses.extend(current);
    assert!(losses.len() > 5, "{} layers searched", losses.len());
    losses.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut want: Vec<String> = losses[..5].iter().map(|(n, _)| n.clone()).collect();
    // No tie at the cut, or the 5 would not be unique.
    assert!(losses[4].1 > losses[5].1, "{losses:?}");
    let mut got: Vec<String> = qtable_rows(&dir.join("mobilenet_v2_qtable"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "not the 5 largest losses: {losses:?}");
    for m in ["MAX", "Percentile9999", "KL"] {
        assert!(
            log.contains(&format!(", with method {m}, and threshlod ")),
            "{log}"
        );
    }

    // Smaller runs: threads, cache and resume give the same files.
    run_ok(&mut sensitive(&dir, &["--threads", "2"], "q2"));
    let reference = outputs(&dir, "q2");
    run_ok(&mut sensitive(&dir, &["--threads", "1"], "q1"));
    assert_eq!(outputs(&dir, "q1"), reference, "1 thread vs 2");
    // (--cache_mb: the budget's former name)
    run_ok(&mut sensitive(&dir, &["--cache_mb", "0"], "q0"));
    assert_eq!(outputs(&dir, "q0"), reference, "no cache vs cache");

    // Kill a search once its journal holds a few layers, then resume.
    let journal = dir.join("qr.journal");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("run_sensitive_layer"))
        .current_dir(&dir)
        .arg("mobilenet_v2.mlir")
        .arg("--dataset")
        .arg(calib())
        .args(["--input_num", "20", "--inference_num", "4"])
        .args(["--calibration_table", "mobilenet_v2_cali_table"])
        .args(["--processor", "bm1684", "--no_time", "-q", "-o", "qr"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    kill_after_journal_layers(&mut child, &journal, 3);
    assert!(
        !dir.join("qr").exists(),
        "an interrupted search wrote its qtable"
    );
    // With a post-process script it is another search: the journal (whose
    // fingerprint covers the script's content) is refused and left as it was.
    write_post_process(&dir);
    let before = std::fs::read(&journal).unwrap();
    let out = sensitive(
        &dir,
        &["--resume", "--post_process", "post_process_func.py"],
        "qr",
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("qr.journal") && err.contains("other inputs"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        before,
        "the journal changed"
    );
    run_ok(&mut sensitive(&dir, &["--resume"], "qr"));
    assert_eq!(outputs(&dir, "qr"), reference, "resumed vs uninterrupted");
    let log = std::fs::read_to_string(dir.join("SensitiveLayerSearch")).unwrap();
    assert!(log.contains("resumed "), "{log}");
    assert!(!journal.exists(), "the journal outlived a finished search");
}

#[test]
fn seed_case4_we_bc_with_search_threshold() {
    let _heavy = super::common::memory_heavy();
    let dir = scratch("search_threshold_we_bc");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    // The seed's case 4 with search_threshold, verbatim.
    let out = run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .args(["--we", "--bc"])
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "100"])
            .args(["--processor", "bm1684"])
            .args(["--search", "search_threshold"])
            .args(["--inference_num", "30"])
            .args(["--bc_inference_num", "100"])
            .args(["-o", "cali_table"]),
    );
    let stdout = stdout_of(&out);
    for f in [
        "Weight_Equalization",
        "Search_Threshold",
        "Bias_Correction",
        "cali_table_we.mlir",
        "cali_table_we_bc.mlir",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing\n{stdout}");
    }
    // The final table is the corrected model's, by the chosen method.
    let text = std::fs::read_to_string(dir.join("cali_table")).unwrap();
    assert!(text.contains("# mlir: cali_table_we_bc.mlir"), "{text}");
    let log = std::fs::read_to_string(dir.join("Search_Threshold")).unwrap();
    let chosen = log
        .lines()
        .find_map(|l| l.strip_prefix("INFO:root:optimal_method_name: "))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    assert!(
        stdout.contains(&format!("its {chosen} table cali_table")),
        "{stdout}"
    );
    // And it deploys with the corrected model.
    run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .args(["--mlir", "cali_table_we_bc.mlir", "--quantize", "INT8"])
            .args(["--processor", "bm1684", "--calibration_table", "cali_table"])
            .args(["--model", "m_we_bc.onnx"]),
    );
}

/// search_qtable with two methods (the seed's `--quantize_method_list
/// KL,MSE`), killed once its journal holds a few layers, resumes to the
/// same qtable, tables and -o as an uninterrupted run, and the killed run
/// left no `-o` behind (it is written when the search has finished).
#[test]
fn search_qtable_two_methods_resumes_byte_identical() {
    let dir = scratch("search_qtable_resume");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    let cmd = |cali: &str, qtable: &str, extra: &[&str]| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("run_calibration"));
        c.current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args([
                "--input_num",
                "6",
                "--inference_num",
                "2",
                "--tune_num",
                "2",
            ])
            .args([
                "--quantize_method_list",
                "KL,MSE",
                "--search",
                "search_qtable",
            ])
            .args(["--expected_cos", "0.9999", "--processor", "bm1684"])
            .args(["--no_time", "-q", "--quantize_table", qtable])
            .args(["--calibration_table", cali])
            .args(extra);
        c
    };
    let files = |cali: &str, qtable: &str| {
        (
            std::fs::read(dir.join(qtable)).unwrap(),
            std::fs::read(dir.join(cali)).unwrap(),
            std::fs::read(dir.join("new_cali_table.txt")).unwrap(),
        )
    };
    let out = cmd("ref_cali", "ref_q", &[]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let reference = files("ref_cali", "ref_q");

    let journal = dir.join("q.journal");
    let mut child = cmd("cali", "q", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    kill_after_journal_layers(&mut child, &journal, 2);
    assert!(!dir.join("cali").exists(), "a killed search left its -o");
    let out = cmd("cali", "q", &["--resume"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let log = std::fs::read_to_string(dir.join("Search_Qtable")).unwrap();
    assert!(log.contains("resumed "), "{log}");
    assert_eq!(files("cali", "q"), reference, "resumed vs uninterrupted");
    assert!(!journal.exists(), "the journal outlived a finished search");
}

/// `| rank | layer | type | mean | min |` rows of a sensitivity report.
fn sensitivity_rows(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| rank"))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                f[2].to_string(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect()
}

/// The per-layer sensitivity report: byte-identical whatever the thread
/// count, and its order is the one `qtune run` gives when each layer is
/// simulated alone in int8 (every other report layer in F32 by qtable),
/// computed here without the search's evaluator.
#[test]
fn sensitivity_table_is_reproducible_and_ranks_like_independent_runs() {
    let dir = scratch("sensitivity_table");
    let image = calib().join("darknet_dog.jpg");
    let input = transform_mobilenet(&dir, "mobilenet_v2", Some(&image), None);
    run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(calib())
            .args(["--input_num", "8", "-o", "cali"]),
    );
    std::fs::write(dir.join("list.txt"), format!("{}\n", image.display())).unwrap();
    let report = |threads: &str, out: &str| {
        let mut cmd = tool("run_sensitive_layer");
        cmd.current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .args(["--data_list", "list.txt", "--input_num", "1"])
            .args(["--inference_num", "1", "--calibration_table", "cali"])
            .args(["--processor", "bm1684x", "--no_time", "-q"])
            .args(["--threads", threads, "--sensitivity_table", out]);
        run_ok(&mut cmd);
        std::fs::read(dir.join(out)).unwrap()
    };
    let two = report("2", "s2.md");
    let one = report("1", "s1.md");
    assert_eq!(one, two, "1 thread vs 2");
    assert!(
        !dir.join("new_cali_table.txt").exists(),
        "no search without -o"
    );
    let rows = sensitivity_rows(&String::from_utf8(two).unwrap());
    assert!(rows.len() > 20, "{} rows", rows.len());

    // Independent: the float output, then each layer alone in int8.
    let run = |extra: &[&str], out: &str| -> Vec<f32> {
        let mut cmd = tool("qtune");
        cmd.current_dir(&dir)
            .args(["run", "mobilenet_v2.mlir", "--input"])
            .arg(&input)
            .args(["-o", out, "--processor", "bm1684x"])
            .args(extra);
        run_ok(&mut cmd);
        let npz = qtune_tensor::read_npz(&dir.join(out)).unwrap();
        assert_eq!(npz.len(), 1, "mobilenet has one output");
        npz[0].1.to_f32_vec()
    };
    let float = run(&["--quantize", "F32"], "f.npz");
    let mut independent: Vec<(String, f64)> = Vec::new();
    for (name, _, _) in &rows {
        let q: String = rows
            .iter()
            .filter(|(n, _, _)| n != name)
            .map(|(n, _, _)| format!("{n} F32\n"))
            .collect();
        std::fs::write(dir.join("q"), q).unwrap();
        let got = run(
            &["--calibration_table", "cali", "--quantize_table", "q"],
            "i.npz",
        );
        independent.push((name.clone(), cosine(&float, &got)));
    }
    // One sample: mean = min = the cosine, printed to 6 decimals.
    for ((name, mean, min), (_, c)) in rows.iter().zip(&independent) {
        assert_eq!(mean, min, "{name}");
        assert!(
            (mean - c).abs() <= 1e-6,
            "{name}: report {mean}, qtune run {c}"
        );
    }
    let worst = independent
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(
        rows[0].0, worst.0,
        "the report's first row is not the argmin"
    );
    for w in rows.windows(2) {
        assert!(w[0].1 <= w[1].1, "not sorted: {w:?}");
    }
    // The order agrees wherever the independent cosines differ by more
    // than the report's printed precision.
    for (i, a) in independent.iter().enumerate() {
        for b in &independent[i + 1..] {
            if b.1 < a.1 - 2e-6 {
                panic!("{} ({}) ranks before {} ({})", a.0, a.1, b.0, b.1);
            }
        }
    }
}
