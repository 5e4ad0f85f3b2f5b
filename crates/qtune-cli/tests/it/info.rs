use crate::common::*;

#[test]
fn info_lists_inputs_outputs_ops_and_names() {
    let out = qtune()
        .arg("info")
        .arg(model("mobilenetv2_nsfw"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let s = stdout_of(&out);
    assert!(s.contains("  input_1 float32 [1,3,224,224]"), "{s}");
    assert!(s.contains("  dense_3 float32 [1,5]"), "{s}");
    // An ONNX file is listed as it is, each op under its Top name.
    assert!(s.contains("  top.Conv 52\n"), "{s}");
    assert!(s.contains("  top.BatchNorm 52\n"), "{s}");
    // Nodes appear in execution order with their output shapes.
    let first_conv = s.find(" top.Conv -> ").unwrap();
    let softmax = s.find(" top.Softmax -> dense_3 [1,5]").unwrap();
    assert!(first_conv < softmax);
}
