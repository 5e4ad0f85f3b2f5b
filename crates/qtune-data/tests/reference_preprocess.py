#!/usr/bin/env python3
"""Writes the reference preprocessing of every validation image, per model.

Usage: reference_preprocess.py WORKLOADS_DIR OUT_DIR

For each model in WORKLOADS_DIR/models/models.toml that has a [preprocess]
table, writes OUT_DIR/<model>.npz with one float32 [1, C, H, W] array per image
of WORKLOADS_DIR/images/val, keyed by the file stem. OUT_DIR/decoded.npz holds
the decoded uint8 HxWx3 RGB pixels (PIL, i.e. libjpeg-turbo) under the same
keys, so that the preprocessing can be checked apart from the JPEG decoder;
OUT_DIR/decoded_gray.npz holds the same images decoded by libjpeg straight to
grayscale (PIL's draft("L") at full size, what cv2.imread(IMREAD_GRAYSCALE)
asks libjpeg for), and OUT_DIR/decoded_calib.npz the RGB pixels of
WORKLOADS_DIR/images/calib, for checking the decoder alone. The arithmetic is
WORKLOADS_DIR/tools/preprocess.py (imported, not copied), the oracle for
qtune-data's preprocessing.
"""
import os
import sys

import numpy as np


def is_jpeg(name):
    return name.lower().endswith((".jpg", ".jpeg"))


def load_jpeg_gray(path):
    """libjpeg's own grayscale output (the luma plane of a YCbCr file), full size."""
    from PIL import Image

    with Image.open(path) as im:
        im.draft("L", im.size)
        assert im.mode == "L", f"{path}: draft gave {im.mode}"
        return np.asarray(im, dtype=np.uint8).copy()


def main():
    workloads, out_dir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(workloads, "tools"))
    from preprocess import load_image_rgb, load_models_toml, preprocess_image

    models = load_models_toml(os.path.join(workloads, "models", "models.toml"))
    val = os.path.join(workloads, "images", "val")
    images = sorted(f for f in os.listdir(val) if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))
    os.makedirs(out_dir, exist_ok=True)
    decoded = {os.path.splitext(f)[0]: load_image_rgb(os.path.join(val, f)) for f in images}
    np.savez(os.path.join(out_dir, "decoded.npz"), **decoded)
    gray = {os.path.splitext(f)[0]: load_jpeg_gray(os.path.join(val, f)) for f in images if is_jpeg(f)}
    np.savez(os.path.join(out_dir, "decoded_gray.npz"), **gray)
    calib = os.path.join(workloads, "images", "calib")
    calib_images = sorted(f for f in os.listdir(calib) if is_jpeg(f))
    calib_decoded = {os.path.splitext(f)[0]: load_image_rgb(os.path.join(calib, f)) for f in calib_images}
    np.savez(os.path.join(out_dir, "decoded_calib.npz"), **calib_decoded)
    for stem, cfg in models.items():
        if "preprocess" not in cfg:
            continue
        arrays = {os.path.splitext(f)[0]: preprocess_image(os.path.join(val, f), cfg) for f in images}
        np.savez(os.path.join(out_dir, f"{stem}.npz"), **arrays)
        print(f"{stem}: {len(arrays)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
