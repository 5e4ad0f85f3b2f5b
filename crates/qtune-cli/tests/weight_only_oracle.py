#!/usr/bin/env python3
"""Independent check of model_deploy's weight-only weights (W8F16, W8BF16,
W4F16, W4BF16), in numpy, from the source ONNX model's float weights.

    weight_only_oracle.py codes SOURCE.onnx EXPORT.onnx BITS GROUP SYMMETRIC FORMAT

For every BITS-bit weight-only weight of EXPORT.onnx (initializers `W_wo8`
or `W_wo4` with `W_scale` and `W_zero_point`, W the source initializer's name),
recomputes the integer codes, scales and zero points from SOURCE.onnx's float
W with TPU-MLIR's rules (lib/Dialect/Tpu/Canonicalize/A16MatMul.cpp:
computePerChannelParam, computePerGroupParam, weightQuantization), written
here from the rules, not from qtune's code:

* the weight in [N, K] order (MatMul's [K, N] transposed; Gemm transB as is);
* GROUP 0 (per output channel): 8 bits symmetric, max|W_n| / 127 and int8
  codes when the weight has a value <= 0, else / 255 and uint8; 4 bits
  asymmetric per row (max(max - min, 1e-5) / 15, zp = clamp(-round(min / s),
  0, 15));
* GROUP g: per g consecutive values along K, uint codes (max 255 or 15),
  asymmetric as above, or SYMMETRIC (s = 2 max|W| / max_int, zp 128 or 8);
* codes = clamp(round(w / s) + zp), round half away from zero, in float32;
* scales stored rounded to FORMAT (F16 or BF16, nearest even).

4-bit layers written as com.microsoft MatMulNBits are unpacked first (two
codes per byte, low nibble first; scales and zero points per block of
`block_size`, each group's repeated over its blocks).

Codes, zero points and scales must agree exactly (exit 1 otherwise). Prints
per-weight relative RMS error of the dequantized weight and the count.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def round_half_away(x):
    a = np.abs(x)
    r = np.floor(a)
    r = r + (a - r >= np.float32(0.5))
    return np.copysign(r, x).astype(np.float32)


def to_format(x, fmt):
    x = np.asarray(x, dtype=np.float32)
    if fmt == "F16":
        return x.astype(np.float16).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    bias = 0x7FFF + ((bits >> 16) & 1)
    out = ((bits + bias) & 0xFFFF0000).astype(np.uint32)
    return out.view(np.float32)


def expected(w_nk, bits, group, symmetric, fmt):
    n, k = w_nk.shape
    max_int = np.float32(15 if bits == 4 else 255)
    f32 = np.float32
    if group == 0 and bits == 8:
        signed = bool((w_nk <= 0).any())
        s = (np.abs(w_nk).max(axis=1) / f32(127 if signed else 255)).astype(f32)
        lo, hi = (-128, 127) if signed else (0, 255)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = round_half_away((w_nk / s[:, None]).astype(f32))
        q = np.where(s[:, None] == 0, 0, q)
        q = np.clip(q, lo, hi)
        return q.reshape(n, k), to_format(s, fmt), np.zeros(n), signed
    g = k if group == 0 else group
    grp = w_nk.reshape(-1, g)
    if symmetric and group != 0:
        s = (f32(2) * np.abs(grp).max(axis=1) / max_int).astype(f32)
        zp = np.full(len(s), 8 if bits == 4 else 128, dtype=f32)
    else:
        lo, hi = grp.min(axis=1), grp.max(axis=1)
        s = (np.maximum(hi - lo, f32(1e-5)) / max_int).astype(f32)
        zp = np.clip(-round_half_away((lo / s).astype(f32)), 0, max_int).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = round_half_away((grp / s[:, None]).astype(f32)) + zp[:, None]
    q = np.where(s[:, None] == 0, zp[:, None], q)
    q = np.clip(q, 0, max_int)
    return q, to_format(s, fmt), zp, False


def codes(source, export, bits, group, symmetric, fmt):
    src = onnx.load(source)
    inits = {i.name: numpy_helper.to_array(i) for i in src.graph.initializer}
    trans_b = {}
    for node in src.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
            tb = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            trans_b[node.input[1]] = node.op_type == "Gemm" and tb
    exported = onnx.load(export)
    out = {i.name: numpy_helper.to_array(i) for i in exported.graph.initializer}
    nbits = {}
    for node in exported.graph.node:
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
            at = {a.name: a.i for a in node.attribute}
            nbits[node.input[1]] = at
    suffix = f"_wo{bits}"
    names = [n[: -len(suffix)] for n in out if n.endswith(suffix)]
    if not names:
        print(f"no {suffix} weights in {export}")
        return 1
    bad = 0
    packed = 0
    errs = []
    for name in sorted(names):
        w = inits[name].astype(np.float32)
        w_nk = w if trans_b.get(name) else w.T
        w_nk = np.ascontiguousarray(w_nk)
        q, s, zp, signed = expected(w_nk, bits, group, symmetric, fmt)
        got_q = out[name + suffix]
        got_s = out[name + "_scale"]
        got_zp = out[name + "_zero_point"]
        at = nbits.get(name + suffix)
        if at is not None:
            # MatMulNBits: codes two per byte (low nibble first) as
            # [N, K / block, block / 2], one scale and zero point per block
            # (zero points packed too): unpack, and expect each group's
            # scale / zero point repeated over its blocks.
            n, k = w_nk.shape
            block = at["block_size"]
            assert at["bits"] == 4 and at["K"] == k and at["N"] == n, at
            nb = k // block
            got_q = np.stack([got_q & 0x0F, got_q >> 4], axis=-1).reshape(n, k)
            zrow = (nb + 1) // 2
            z = got_zp.reshape(n, zrow)
            got_zp = np.stack([z & 0x0F, z >> 4], axis=-1).reshape(n, -1)[:, :nb].reshape(-1)
            rep = (k // (len(s) // n)) // block
            s = np.repeat(s, rep)
            zp = np.repeat(zp, rep)
            q = q.reshape(n, k)
        ok = (
            got_q.size == q.size
            and np.array_equal(got_q.reshape(-1).astype(np.float32), q.reshape(-1))
            and np.array_equal(got_s, s)
            and np.array_equal(got_zp.astype(np.float32), zp)
            and (got_q.dtype == np.int8) == signed
        )
        if not ok:
            bad += 1
            diff = np.count_nonzero(got_q.reshape(-1).astype(np.float32) != q.reshape(-1)) if got_q.size == q.size else -1
            print(f"MISMATCH {name}: {diff} codes differ; scales equal {np.array_equal(got_s, s)}; "
                  f"zero points equal {np.array_equal(got_zp.astype(np.float32), zp)}; dtype {got_q.dtype}")
        deq = ((q.reshape(len(s), -1) - zp.reshape(-1, 1)) * s.reshape(-1, 1)).reshape(w_nk.shape)
        packed += at is not None
        errs.append(float(np.sqrt(np.mean((deq - w_nk) ** 2)) / np.sqrt(np.mean(w_nk**2))))
    print(f"{len(names)} weights checked ({packed} as MatMulNBits), {bad} mismatched; relative RMS weight error "
          f"mean {np.mean(errs):.4f} max {np.max(errs):.4f}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 8 or sys.argv[1] != "codes":
        print(__doc__)
        sys.exit(2)
    _, _, source, export, bits, group, symmetric, fmt = sys.argv
    sys.exit(codes(source, export, int(bits), int(group), symmetric in ("1", "true"), fmt))
