#!/usr/bin/env python3
"""Reference for `qtune detect`: ONNX Runtime + numpy, decoded the same way.

The image is preprocessed by the workloads' reference (`tools/preprocess.py`, with the
model's models.toml table), run with ONNX Runtime, and the head is decoded as
`qtune-vision` documents it:

* yolox  `[1, N, 5 + C]`: row i of the level with stride s and a `gw`-wide grid sits at
  `(i % gw, i // gw)`; `cx, cy = (x + gx) * s, (y + gy) * s`, `w, h = exp(w) * s, exp(h) * s`;
  score of class c = obj * cls[c].
* yolov8 `[1, 4 + C, N]`: column j is `cx, cy, w, h` in input pixels, then C class scores.

Each anchor keeps its best class (lowest index on ties) when its score is >= --conf;
greedy NMS per class in (score desc, anchor index asc) order drops a box whose IoU with a
kept box of its class is > --iou; the kept boxes are listed in the same order. Boxes
are mapped back through the letterbox (`x_orig = (x - pad_x) * iw / rw`, rw the resized
width) and clipped to the image.

Prints one line per box, `label score x1 y1 x2 y2`, as `qtune detect` does.

Usage: detect_ref.py --workloads DIR --model STEM --image IMG [--labels FILE]
                     [--conf 0.25] [--iou 0.45]
"""

import argparse
import os
import sys

import numpy as np
import onnxruntime as ort

STRIDES = (8, 16, 32)


def decode(out, fmt, net_h, net_w):
    """-> boxes [N, 4] (x1, y1, x2, y2, network pixels) and scores [N, C]."""
    if fmt == "yolox":
        rows = out[0].astype(np.float64)
        grids = []
        for s in STRIDES:
            gh, gw = net_h // s, net_w // s
            ys, xs = np.divmod(np.arange(gh * gw), gw)
            grids.append(np.stack([xs, ys, np.full(gh * gw, s)], axis=1))
        grid = np.concatenate(grids).astype(np.float64)
        assert grid.shape[0] == rows.shape[0], (grid.shape, rows.shape)
        cx = (rows[:, 0] + grid[:, 0]) * grid[:, 2]
        cy = (rows[:, 1] + grid[:, 1]) * grid[:, 2]
        w = np.exp(rows[:, 2]) * grid[:, 2]
        h = np.exp(rows[:, 3]) * grid[:, 2]
        scores = rows[:, 4:5] * rows[:, 5:]
    else:
        cols = out[0].T.astype(np.float64)
        cx, cy, w, h = cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3]
        scores = cols[:, 4:]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, scores


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes, scores, conf, iou_thr):
    cls = np.argmax(scores, axis=1)  # first maximum on ties
    best = scores[np.arange(len(cls)), cls]
    cand = [i for i in range(len(cls)) if best[i] >= conf]
    cand.sort(key=lambda i: (-best[i], i))
    kept = []
    for i in cand:
        if all(cls[k] != cls[i] or iou(boxes[k], boxes[i]) <= iou_thr for k in kept):
            kept.append(i)
    return [(i, int(cls[i]), float(best[i])) for i in kept]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", required=True)
    ap.add_argument("--model", required=True, help="models.toml stem")
    ap.add_argument("--image", required=True)
    ap.add_argument("--labels")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    a = ap.parse_args()

    sys.path.insert(0, os.path.join(a.workloads, "tools"))
    from preprocess import load_image_rgb, load_models_toml, preprocess_image

    cfg = load_models_toml()[a.model]
    pp = cfg["preprocess"]
    _, _, net_h, net_w = cfg["inputs"][0]["shape"]
    x = preprocess_image(a.image, cfg)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        os.path.join(a.workloads, "models", cfg["file"]), opts, providers=["CPUExecutionProvider"]
    )
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    fmt = "yolox" if out.shape[2] < out.shape[1] else "yolov8"
    boxes, scores = decode(out, fmt, net_h, net_w)

    ih, iw = load_image_rgb(a.image).shape[:2]
    assert pp["keep_aspect_ratio"] and pp["pad_type"] == "normal", "only letterbox 'normal' here"
    assert list(pp["resize_dims"]) == [net_h, net_w], "no crop here"
    s = min(net_w / iw, net_h / ih)
    rw, rh = int(iw * s), int(ih * s)
    labels = []
    if a.labels:
        with open(a.labels) as fh:
            labels = [line.rstrip("\n") for line in fh if line.strip()]
    for i, c, score in nms(boxes, scores, a.conf, a.iou):
        x1, y1, x2, y2 = boxes[i]
        x1, x2 = (np.clip(v * iw / rw, 0, iw) for v in (x1, x2))
        y1, y2 = (np.clip(v * ih / rh, 0, ih) for v in (y1, y2))
        label = labels[c] if c < len(labels) else f"class{c}"
        print(f"{label} {score:.4f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}")


if __name__ == "__main__":
    main()
