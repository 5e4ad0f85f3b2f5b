use crate::common::*;

#[test]
fn export_writes_a_model_that_runs_like_the_source() {
    let dir = scratch("export_cli");
    let out_model = dir.join("m.onnx");
    let out = qtune()
        .arg("export")
        .arg(model("mobilenetv2_nsfw"))
        .arg("-o")
        .arg(&out_model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("opset 17"), "{}", stderr_of(&out));

    // BatchNormalization is folded by default and kept with --no_fold_bn.
    let info = |path: &std::path::Path| {
        let out = qtune().arg("info").arg(path).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        stdout_of(&out)
    };
    // (`qtune info` lists an ONNX file's ops under their Top names.)
    assert!(!info(&out_model).contains("top.BatchNorm"));
    let kept = dir.join("kept.onnx");
    let out = qtune()
        .arg("export")
        .arg(model("mobilenetv2_nsfw"))
        .args(["--output"])
        .arg(&kept)
        .arg("--no_fold_bn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(info(&kept).contains("  top.BatchNorm 52\n"));

    // The exported file gives the source model's outputs.
    let input = workloads().join("golden/mobilenetv2_nsfw/input.npz");
    let run = |m: &std::path::Path, o: &str| {
        let out = qtune()
            .arg("run")
            .arg(m)
            .arg("--input")
            .arg(&input)
            .arg("-o")
            .arg(dir.join(o))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    run(&model("mobilenetv2_nsfw"), "src.npz");
    run(&kept, "kept.npz");
    assert_eq!(
        std::fs::read(dir.join("src.npz")).unwrap(),
        std::fs::read(dir.join("kept.npz")).unwrap()
    );

    let out = qtune()
        .arg("export")
        .arg(dir.join("missing.onnx"))
        .arg("-o")
        .arg(dir.join("x.onnx"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("missing.onnx"),
        "{}",
        stderr_of(&out)
    );
}
