//! Dataset selection against CPython running TPU-MLIR's DataSelector logic.

use std::path::PathBuf;
use std::process::Command;

use qtune_data::{SampleKind, select_data_list, select_dataset};

fn calib() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads/images/calib"
    ));
    assert!(
        p.is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh",
        p.display()
    );
    p
}

/// The files DataSelector picks: recursive glob, sorted, random.seed(1684),
/// random.shuffle, first `n`.
fn python_selection(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    let script = r#"
import random, sys
from pathlib import Path
exts = {"jpg", "bmp", "png", "jpeg", "jfif", "npy", "npz"}
files = sorted(str(p) for p in Path(sys.argv[1]).glob("**/*") if p.is_file() and p.suffix[1:].lower() in exts)
random.seed(1684)
random.shuffle(files)
n = int(sys.argv[2])
if 0 < n < len(files):
    files = files[:n]
print("\n".join(files))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(n.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

#[test]
fn dataset_selection_equals_tpu_mlir() {
    let dir = calib();
    for n in [0, 1, 10, 64, 1000] {
        let sel = select_dataset(&dir, n).unwrap();
        assert_eq!(sel.kind, SampleKind::Image);
        let got: Vec<PathBuf> = sel
            .samples
            .into_iter()
            .map(|s| s.files[0].clone())
            .collect();
        assert_eq!(got, python_selection(&dir, n), "input_num {n}");
    }
}

#[test]
fn selection_errors_name_the_problem() {
    let err = select_dataset(std::path::Path::new("/nonexistent/calib"), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/calib") && err.contains("no such folder"),
        "{err}"
    );

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("selection_errors");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("empty")).unwrap();
    std::fs::write(tmp.join("empty/readme.txt"), "x").unwrap();
    let err = select_dataset(&tmp.join("empty"), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable file"), "{err}");

    let list = tmp.join("list.txt");
    std::fs::write(&list, "a.npy,b.npy\nc.npy\n").unwrap();
    let err = select_data_list(&list, 0, 2).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("1 file(s) for a model with 2 input(s)"),
        "{err}"
    );
    std::fs::write(&list, "a.npy,b.npy\nc.npy,d.npy\ne.npy,f.npy\n").unwrap();
    let sel = select_data_list(&list, 2, 2).unwrap();
    assert_eq!(sel.samples.len(), 2);
    assert_eq!(
        sel.samples[1].files,
        vec![PathBuf::from("c.npy"), PathBuf::from("d.npy")]
    );
    std::fs::write(&list, "a.npy\nb.jpg\n").unwrap();
    let err = select_data_list(&list, 0, 1).unwrap_err().to_string();
    assert!(err.contains("mix"), "{err}");
}
