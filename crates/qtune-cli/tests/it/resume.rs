//! `--resume` of run_qtable, search_threshold, fast_search and `--bc`: a run killed
//! part-way through its journal, then resumed, writes the same bytes as an
//! uninterrupted run; a journal of other inputs is refused.
//!
//! Each case runs in two folders holding the same inputs under the same
//! names (the logs name the files): `ref` runs uninterrupted, `run` is
//! killed once its journal holds a few records (and not all of them:
//! checked against the reference run's count) and then resumed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::common::{run_ok, scratch, stderr_of, stdout_of, tool, transform_mobilenet, workloads};

fn calib() -> String {
    workloads().join("images/calib").display().to_string()
}

/// `dir/ref` and `dir/run`, each with the .mlir, its weights and (when
/// `table`) a calibration table of 8 samples.
fn setup(name: &str, table: bool) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    transform_mobilenet(&dir, "m", None, None);
    if table {
        run_ok(
            tool("run_calibration")
                .current_dir(&dir)
                .arg("mobilenet_v2.mlir")
                .args(["--dataset", &calib(), "--input_num", "8", "--tune_num", "2"])
                .args(["--no_time", "-q", "-o", "table"]),
        );
    }
    let mut out = Vec::new();
    for sub in ["ref", "run"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["mobilenet_v2.mlir", "m_top_f32_all_weight.npz", "table"] {
            if dir.join(f).exists() {
                std::fs::copy(dir.join(f), d.join(f)).unwrap();
            }
        }
        out.push(d);
    }
    (out[0].clone(), out[1].clone())
}

fn command(dir: &Path, bin: &str, args: &[&str], extra: &[&str]) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin(bin));
    c.current_dir(dir).args(args).args(extra);
    c
}

fn output(dir: &Path, bin: &str, args: &[&str], extra: &[&str]) -> Output {
    command(dir, bin, args, extra).output().unwrap()
}

fn success(dir: &Path, bin: &str, args: &[&str], extra: &[&str]) -> Output {
    let out = output(dir, bin, args, extra);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    out
}

/// Records of `kind` in the journal at `path` (0 when absent).
fn records(path: &Path, kind: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with(&format!("{kind}\t")))
                .count()
        })
        .unwrap_or(0)
}

/// Kills `child` once the journal at `journal` holds `n` records of `kind`
/// and returns how many it then holds (asserting the run had not ended).
fn kill_after(mut child: Child, journal: &Path, kind: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(600);
    while records(journal, kind) < n && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run ended before it was killed");
    let got = records(journal, kind);
    assert!(got >= n, "killed with {got} {kind} record(s), wanted {n}");
    got
}

fn spawn(dir: &Path, bin: &str, args: &[&str]) -> Child {
    command(dir, bin, args, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The bytes of `names` in `dir`; in the logs (`names` starting with an
/// upper-case letter) the `total time` lines are left out.
fn files(dir: &Path, names: &[&str]) -> Vec<(String, Vec<u8>)> {
    names
        .iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(n))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(n).display()));
            let bytes = if n.starts_with(|c: char| c.is_ascii_uppercase()) {
                String::from_utf8(bytes)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.contains("total time"))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
                    .into_bytes()
            } else {
                bytes
            };
            (n.to_string(), bytes)
        })
        .collect()
}

/// `--resume` with `args` but the flag `other[0]` set to `other[1]` exits
/// 2 naming the journal, and leaves it.
fn refused(dir: &Path, bin: &str, args: &[&str], other: [&str; 2], journal: &Path) {
    let before = std::fs::read(journal).unwrap();
    let at = args
        .iter()
        .position(|a| *a == other[0])
        .expect("the flag to change");
    let mut changed = args.to_vec();
    changed[at + 1] = other[1];
    let out = output(dir, bin, &changed, &["--resume"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&journal.file_name().unwrap().to_string_lossy().to_string())
            && err.contains("other inputs"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(journal).unwrap(),
        before,
        "the journal changed"
    );
}

/// Resumes the killed run in `run` (`args` plus `--resume`) and checks
/// it: stdout says `read` (how many records it read back, and from which
/// journal), the outputs `names` equal `want` (the uninterrupted run's),
/// and the journal is gone. Returns the resumed run's stdout.
fn resume_matches(
    run: &Path,
    bin: &str,
    args: &[&str],
    read: &str,
    (names, want): (&[&str], &[(String, Vec<u8>)]),
    journal: &Path,
) -> String {
    let out = success(run, bin, args, &["--resume"]);
    let stdout = stdout_of(&out);
    assert!(stdout.contains(read), "{stdout}");
    assert_eq!(files(run, names), want, "resumed vs uninterrupted");
    assert!(!journal.exists(), "the journal outlived the run");
    stdout
}

#[test]
fn run_qtable_resume_is_byte_identical() {
    let (reference, run) = setup("resume_run_qtable", true);
    let calib = calib();
    let args = [
        "mobilenet_v2.mlir",
        "--dataset",
        &calib,
        "--input_num",
        "4",
        "--calibration_table",
        "table",
        "--processor",
        "bm1684x",
        "--expected_cos",
        "0.9999",
        "--min_layer_cos",
        "0.999",
        "--no_time",
        "-o",
        "q",
    ];
    let out = success(&reference, "run_qtable", &args, &[]);
    let stdout = stdout_of(&out);
    let total: usize = stdout
        .lines()
        .find_map(|l| l.split(" float layer(s), ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no configuration count in {stdout}"));
    assert!(total >= 6, "{total} configurations: too few to interrupt");
    let names = ["q", "full_loss_table.txt", "Mix_Search"];
    let want = files(&reference, &names);
    assert!(!reference.join("q.journal").exists());

    let journal = run.join("q.journal");
    let child = spawn(&run, "run_qtable", &[&args[..], &["-q"]].concat());
    let n = kill_after(child, &journal, "config", 3);
    assert!(n < total, "the journal holds all {total} configurations");
    assert!(!run.join("q").exists() && !run.join("full_loss_table.txt").exists());
    refused(
        &run,
        "run_qtable",
        &args,
        ["--min_layer_cos", "0.998"],
        &journal,
    );

    resume_matches(
        &run,
        "run_qtable",
        &args,
        &format!("--resume: {n} scored configuration(s) read from `q.journal`"),
        (&names, &want),
        &journal,
    );
}

const METHOD_TABLES: [&str; 8] = [
    "st_kl.1",
    "st_kl_tune",
    "st_max.1",
    "st_max_tune",
    "st_percentile9999.1",
    "st_percentile9999_tune",
    "st_mse.1",
    "st_mse_tune",
];

#[test]
fn search_threshold_resume_is_byte_identical() {
    let (reference, run) = setup("resume_search_threshold", false);
    let calib = calib();
    let args = [
        "mobilenet_v2.mlir",
        "--dataset",
        &calib,
        "--input_num",
        "10",
        "--inference_num",
        "8",
        "--tune_num",
        "2",
        "--search",
        "search_threshold",
        "--processor",
        "bm1684x",
        "--no_time",
        "-o",
        "st",
    ];
    success(&reference, "run_calibration", &args, &["-q"]);
    let mut names = vec![
        "st",
        "new_cali_table.txt",
        "shape_pattern_qtable",
        "Search_Threshold",
    ];
    names.extend(METHOD_TABLES);
    let want = files(&reference, &names);

    let journal = run.join("st.journal");
    let child = spawn(&run, "run_calibration", &[&args[..], &["-q"]].concat());
    let n = kill_after(child, &journal, "score", 1);
    assert!(n < 4, "the journal holds every table's score");
    assert!(!run.join("st").exists(), "a killed search left its -o");
    refused(
        &run,
        "run_calibration",
        &args,
        ["--inference_num", "7"],
        &journal,
    );

    resume_matches(
        &run,
        "run_calibration",
        &args,
        &format!("--resume: {n} table score(s) read from `st.journal`"),
        (&names, &want),
        &journal,
    );
}

#[test]
fn fast_search_resume_is_byte_identical() {
    let (reference, run) = setup("resume_fast_search", true);
    let calib = calib();
    let args = [
        "mobilenet_v2.mlir",
        "--dataset",
        &calib,
        "--input_num",
        "4",
        "--inference_num",
        "2",
        "--search",
        "fast_search",
        "--processor",
        "bm1684x",
        "--expected_cos",
        "0.99999",
        "--no_time",
        "--quantize_table",
        "q",
        "-o",
        "table",
    ];
    let out = success(&reference, "run_calibration", &args, &[]);
    let stdout = stdout_of(&out);
    let rounds: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fast_search: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no round count in {stdout}"));
    // A round scores every remaining int8 layer (dozens in MobileNetV2)
    // one at a time: 8 scores are well inside the first round.
    assert!(rounds >= 1, "{stdout}");
    let names = ["q", "table", "Search_Qtable"];
    let want = files(&reference, &names);
    assert!(!reference.join("q.journal").exists());

    let journal = run.join("q.journal");
    let child = spawn(&run, "run_calibration", &[&args[..], &["-q"]].concat());
    let n = kill_after(child, &journal, "score", 8);
    refused(
        &run,
        "run_calibration",
        &args,
        ["--inference_num", "3"],
        &journal,
    );

    resume_matches(
        &run,
        "run_calibration",
        &args,
        &format!("--resume: {n} score(s) read from `q.journal`"),
        (&names, &want),
        &journal,
    );
}

/// The bias-correction flags of the tests: a cosine floor that sends most
/// Convs to a trial, on 2 samples.
const BC: [&str; 7] = [
    "--bc",
    "--bc_inference_num",
    "2",
    "--min_layer_cos",
    "0.9999",
    "--expected_cos",
    "0.99999",
];

/// Kills a `--bc` run once its journal holds the base score and 2 Convs
/// (and not every visited Conv), checks the refusal of other samples, and
/// resumes it; returns the resumed run's stdout.
fn interrupt_and_resume_bc(
    reference: &Path,
    run: &Path,
    args: &[&str],
    journal_name: &str,
    outputs: &[&str],
) -> String {
    let want = files(reference, outputs);
    let log = std::fs::read_to_string(reference.join("Bias_Correction")).unwrap();
    let visited = log.matches("old_layer_cos:").count();
    assert!(
        visited >= 5,
        "{visited} Convs visited: too few to interrupt"
    );
    assert!(!reference.join(journal_name).exists());

    let journal = run.join(journal_name);
    let child = spawn(run, "run_calibration", &[args, &["-q"]].concat());
    let n = kill_after(child, &journal, "conv", 2);
    assert_eq!(records(&journal, "base"), 1);
    assert!(n < visited, "the journal holds every Conv");
    assert!(!run.join("t").exists() && !run.join("st").exists());
    refused(
        run,
        "run_calibration",
        args,
        ["--bc_inference_num", "3"],
        &journal,
    );

    resume_matches(
        run,
        "run_calibration",
        args,
        &format!(
            "--resume: {} record(s) of the bias correction read from `{journal_name}`",
            n + 1
        ),
        (outputs, &want),
        &journal,
    )
}

#[test]
fn bias_correction_with_we_resume_is_byte_identical() {
    let _heavy = super::common::memory_heavy();
    let (reference, run) = setup("resume_we_bc", false);
    let calib = calib();
    let mut args = vec![
        "mobilenet_v2.mlir",
        "--dataset",
        &calib,
        "--input_num",
        "6",
        "--tune_num",
        "2",
        "--we",
        "--processor",
        "bm1684x",
        "--no_time",
        "-o",
        "t",
    ];
    args.extend(BC);
    success(&reference, "run_calibration", &args, &["-q"]);
    interrupt_and_resume_bc(
        &reference,
        &run,
        &args,
        "t_we_bc.mlir.journal",
        &[
            "t",
            "t_we.mlir",
            "t_we_weight.npz",
            "t_we_bc.mlir",
            "t_we_bc_weight.npz",
            "Weight_Equalization",
            "Bias_Correction",
        ],
    );
}

#[test]
fn search_threshold_with_bc_resume_is_byte_identical() {
    let _heavy = super::common::memory_heavy();
    let (reference, run) = setup("resume_threshold_bc", false);
    let calib = calib();
    let mut args = vec![
        "mobilenet_v2.mlir",
        "--dataset",
        &calib,
        "--input_num",
        "6",
        "--inference_num",
        "3",
        "--tune_num",
        "2",
        "--search",
        "search_threshold",
        "--processor",
        "bm1684x",
        "--no_time",
        "-o",
        "st",
    ];
    args.extend(BC);
    success(&reference, "run_calibration", &args, &["-q"]);
    let mut outputs = vec![
        "st",
        "st_bc.mlir",
        "st_bc_weight.npz",
        "new_cali_table.txt",
        "Search_Threshold",
        "Bias_Correction",
    ];
    outputs.extend(METHOD_TABLES);
    let stdout = interrupt_and_resume_bc(&reference, &run, &args, "st_bc.mlir.journal", &outputs);
    // The search's journal was kept through the bias correction: the
    // resumed run scored no table again.
    assert!(
        stdout.contains("--resume: 4 table score(s) read from `st.journal`"),
        "{stdout}"
    );
    assert!(!run.join("st.journal").exists());
}
