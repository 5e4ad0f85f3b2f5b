use std::path::PathBuf;

use assert_cmd::Command;

pub fn qtune() -> Command {
    Command::cargo_bin("qtune").expect("qtune binary")
}

pub fn workloads() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    assert!(
        p.join("models").is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh to create the workloads next to the repository",
        p.display()
    );
    p
}

pub fn model(name: &str) -> PathBuf {
    workloads().join(format!("models/{name}.onnx"))
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
