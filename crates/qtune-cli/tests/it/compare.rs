use qtune_tensor::{Tensor, write_npz};

use crate::common::*;

#[test]
fn compare_exits_1_below_tolerance_and_prints_tpu_mlir_summary() {
    let dir = scratch("compare");
    let a = Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.5]).unwrap();
    write_npz(
        &dir.join("a.npz"),
        &[("x".into(), a.clone()), ("y".into(), a.clone())],
    )
    .unwrap();
    write_npz(&dir.join("b.npz"), &[("x".into(), a), ("y".into(), b)]).unwrap();
    let out = qtune()
        .arg("compare")
        .arg(dir.join("a.npz"))
        .arg(dir.join("b.npz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s = stdout_of(&out);
    assert!(s.contains("2 compared\n1 passed\n  1 equal, 0 close, 0 similar\n1 failed\n  0 not equal, 1 not similar"), "{s}");
    assert!(s.contains("y ") && s.contains("NOT_SIMILAR"), "{s}");
    let out = qtune()
        .arg("compare")
        .arg(dir.join("a.npz"))
        .arg(dir.join("b.npz"))
        .args(["--tolerance", "0.9,0.8"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
}
