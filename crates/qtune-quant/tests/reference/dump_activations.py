#!/usr/bin/env python3
"""Real activations for tests/real_stats.rs: every float tensor of a model on a few images.

Usage: dump_activations.py <workloads> <model stem> <n images> <stride> <out.npz> <out spec.txt>

The first <n images> of <workloads>/images/calib (name order) are preprocessed by the workloads'
reference tools/preprocess.py (the model's models.toml preprocessing), run through ONNX Runtime
(CPU, no graph optimisation, every float node output made a graph output), and every
<stride>-th tensor in graph order (the graph input first; the last tensor always) is written to
<out.npz> as one float32 array [n images, size] keyed by tensor name. <out spec.txt> gets the
lines `name op_index op_count batch_count` that tests/reference/cali_reference.py reads (op
index = position in graph order, the input being 0).

ONNX Runtime only produces the data; the thresholds are computed from it by numpy
(cali_reference.py) and by the Rust crate, and those two are compared.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    workloads, stem, n_images, stride, out_npz, out_spec = sys.argv[1:7]
    n_images, stride = int(n_images), int(stride)
    sys.path.insert(0, os.path.join(workloads, "tools"))
    from preprocess import load_models_toml, preprocess_image

    cfg = load_models_toml()[stem]
    model = onnx.load(os.path.join(workloads, "models", cfg["file"]))
    model = onnx.shape_inference.infer_shapes(model)
    float_t = onnx.TensorProto.FLOAT
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(model.graph.value_info) + list(model.graph.output)}
    inp = cfg["inputs"][0]["name"]
    names = [inp]
    for node in model.graph.node:
        for o in node.output:
            if o and types.get(o) == float_t and o not in names:
                names.append(o)
    existing = {o.name for o in model.graph.output}
    for n in names[1:]:
        if n not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(n, float_t, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    calib = os.path.join(workloads, "images", "calib")
    images = sorted(f for f in os.listdir(calib) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    images = images[:n_images]
    picked = [i for i in range(len(names)) if i % stride == 0 or i == len(names) - 1]
    per = {names[i]: [] for i in picked}
    for img in images:
        x = preprocess_image(os.path.join(calib, img), cfg)
        outs = dict(zip([o.name for o in sess.get_outputs()],
                        sess.run(None, {inp: x})))
        outs[inp] = x
        for n in per:
            per[n].append(np.asarray(outs[n], dtype=np.float32).ravel())
    np.savez(out_npz, **{n: np.stack(v) for n, v in per.items()})
    with open(out_spec, "w") as fh:
        for i in picked:
            fh.write(f"{names[i]} {i} {len(names)} {len(images)}\n")


if __name__ == "__main__":
    main()
