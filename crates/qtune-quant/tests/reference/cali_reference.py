#!/usr/bin/env python3
"""Reference implementation of TPU-MLIR's calibration thresholds (numpy only).

Written from ../shared/reference/tpu-mlir-quant-spec.md sections 3.1-3.3 and
PyTorch's HistogramObserver, independently of the Rust code, in the same
precision choices the Rust crate documents (float32 histogram arithmetic as
NumPy >= 2 does it with float32 scalars, f64 means, the KL loop in float32
with a sequential sum and log10 evaluated in f64 then rounded to float32).

Usage: cali_reference.py <tensors.npz> <spec.txt>
  the npz holds one array [samples, size] per tensor;
  spec.txt has lines `name op_index op_count batch_count`.
Prints one line per tensor and method: `name method threshold vmin vmax`.
"""
import math
import sys

import numpy as np

F32 = np.float32


# ---------------------------------------------------------------- histogram
def histogram(x, T, B):
    t = np.abs(x.ravel())
    t = t[t != 0]
    width = F32(T) / F32(B - 1)
    if t.size > 0:
        hist, _ = np.histogram(np.floor(t / width + F32(0.5)), bins=B, range=(0, B - 1))
    else:
        hist = np.zeros(B)
    return hist.astype(np.int64), width


class GrowingHist:
    def __init__(self, x, T, B):
        self.hist, self.width = histogram(x, T, B)
        self.T = F32(T)

    def add(self, x, T_new, bin_num):
        T_new = F32(T_new)
        if T_new <= self.T:
            h, _ = histogram(x, self.T, len(self.hist))
            self.hist = self.hist + h
            return
        n_old = len(self.hist)
        old_step = self.T / F32(n_old)
        extra = int((T_new - self.T) // old_step + F32(1))
        nb = n_old + extra
        if nb > 8000000:
            self.hist, self.width = histogram(x, T_new, bin_num)
            self.T = T_new
            return
        T2 = F32(extra) * old_step + self.T
        h, w = histogram(x, T2, nb)
        h[:n_old] += self.hist
        self.hist, self.width, self.T = h, w, T2


# ---------------------------------------------------------------- KL
def log10f(v):
    return np.log10(v.astype(np.float64)).astype(F32)


def kl_c(hist, width, BINS):
    N = len(hist)
    count = F32(hist.sum())
    p_all = hist.astype(F32) / count
    best, best_m = None, 0
    for m, i in enumerate(range(BINS, N + 1, BINS)):
        P = p_all[:i].copy()
        P[i - 1] = F32(hist[i - 1:].sum()) / count
        s = F32(hist[:i].sum())
        expand = i // BINS
        g = hist[:i].reshape(BINS, expand)
        sg = g.sum(axis=1).astype(F32)
        ng = (g != 0).sum(axis=1)
        ng[ng == 0] = 1
        qv = sg / ng.astype(F32) / s
        Q = np.where(g != 0, qv[:, None], F32(0)).ravel().astype(F32)
        eps = F32(1e-30)
        terms = P * (log10f(P + eps) - log10f(Q + eps))
        kl = np.cumsum(terms.astype(F32), dtype=F32)[-1]
        if best is None or kl < best:
            best, best_m = kl, m
    return F32(width) * F32((best_m + 1) * BINS)


def kl_threshold(hist, width, BINS=128):
    h = hist.copy()
    width = F32(width)

    def pad(h):
        r = len(h) % BINS
        return np.concatenate([h, np.zeros(BINS - r, np.int64)]) if r else h

    h = pad(h)
    while len(h) > 64 * 2048:
        h = h[::2] + h[1::2]
        h = pad(h)
        width = width * F32(2)
    return kl_c(h, width, BINS)


# ---------------------------------------------------------------- per sample
def threshold_mse(x, bit=8):
    x = x.astype(np.float64)
    unsigned = 4 if abs(np.min(x) - 0) < 1e-6 else 1
    a = np.abs(x)
    if (a > 0).sum() == 0:
        return 1.0
    s = a.sum() / (a > 0).sum()
    for _ in range(20):
        s1 = a[a > s].sum() / (1 / (4 ** bit) / 3 / unsigned * (a <= s).sum() + (a > s).sum())
        if abs(s1 - s) < 1e-6:
            break
        s = s1
    return float(s)


def aciq_gauss(x, bit=8):
    alpha = 3.92403337 if bit == 8 else 2.55913642
    c = (0.5 * 0.35) * (1 + (math.pi * math.log(4)) ** 0.5)
    return alpha * (float(x.max()) - float(x.min())) * c / (2 * math.log(x.size)) ** 0.5


def aciq_laplace(x, bit=8):
    beta = 9.89675982 if bit == 8 else 5.02864014
    x = x.astype(np.float64)
    return beta * float(np.mean(np.abs(x - np.mean(x))))


# ---------------------------------------------------------------- torch observer
def histc(x, bins, lo, hi):
    lo, hi = F32(lo), F32(hi)
    if lo == hi:
        lo, hi = lo - F32(1), hi + F32(1)
    v = x[(x >= lo) & (x <= hi)]
    pos = ((v - lo) * F32(bins) / (hi - lo)).astype(np.int64)
    pos = np.minimum(pos, bins - 1)
    return np.bincount(pos, minlength=bins).astype(F32)


class TorchObserver:
    def __init__(self, bins):
        self.bins, self.up = bins, 128
        self.hist = np.zeros(bins, F32)
        self.min, self.max = F32(np.inf), F32(-np.inf)

    def init(self):
        return not (self.min == np.inf and self.max == -np.inf)

    def observe(self, x):
        x = x[np.isfinite(x)].astype(F32)
        if x.size == 0:
            return
        xmin, xmax = F32(x.min()), F32(x.max())
        if (not self.init()) or self.min == self.max or (self.max - self.min) < F32(1e-6):
            self.min, self.max = xmin, xmax
            self.hist = histc(x, self.bins, xmin, xmax)
            return
        cmin, cmax = min(xmin, self.min), max(xmax, self.max)
        old_range = self.max - self.min
        down = int(np.ceil((cmax - cmin) / old_range * F32(self.up)))
        e = F32(down / self.up) * old_range - (cmax - cmin)
        start = int(np.round((self.min - cmin) / old_range * F32(self.bins) * F32(self.up)))
        cmax = F32(cmax + e)
        comb = histc(x, self.bins, cmin, cmax)
        if cmin == self.min and cmax == self.max:
            self.hist = comb + self.hist
            return
        if self.bins * down * 4 > 1e9:
            self.min, self.max = xmin, xmax
            self.hist = histc(x, self.bins, xmin, xmax)
            return
        grid = np.zeros(self.bins * down, F32)
        ups = np.repeat(self.hist, self.up)
        end = min(start + len(ups), len(grid))
        grid[start:end] = ups[: end - start]
        integral = np.cumsum(grid, dtype=np.float64)[down - 1::down]
        shifted = np.zeros(self.bins, F32)
        shifted[1:] = integral[:-1]
        interp = (integral - shifted.astype(np.float64)) / self.up
        self.hist = comb + interp.astype(F32)
        self.min, self.max = cmin, cmax

    def qerror(self, ns, ne):
        bins = self.bins
        bw64 = (float(self.max) - float(self.min)) / bins
        dst64 = bw64 * (ne - ns + 1) / 256
        if dst64 == 0.0:
            return 0.0
        bw, dst, half, nhalf = F32(bw64), F32(dst64), F32(dst64 / 2), F32(-dst64 / 2)
        sb = (np.arange(bins) - ns).astype(F32) * bw
        se = sb + bw
        dob = np.clip(np.floor_divide(sb, dst), F32(0), F32(255))
        dobc = (dob + F32(0.5)) * dst
        doe = np.clip(np.floor_divide(se, dst), F32(0), F32(255))
        dens = self.hist / bw

        def gn(b, e, d):
            return d * ((e * e * e - b * b * b) / F32(3))

        norm = np.zeros(bins, F32)
        norm += gn(sb - dobc, half, dens)
        norm += (doe - dob - F32(1)) * gn(nhalf, half, dens)
        doec = doe * dst + half
        norm += gn(nhalf, se - doec, dens)
        return float(F32(norm.astype(np.float64).sum()))

    def search(self):
        bins = self.bins
        bw = (self.max - self.min) / F32(bins)
        total = float(F32(self.hist.astype(np.float64).sum()))
        csum = np.cumsum(self.hist.astype(np.float64)).astype(F32)
        alpha, beta, sb, eb, nmin = 0.0, 1.0, 0, bins - 1, math.inf
        while alpha < beta:
            na, nb = alpha + 1e-5, beta - 1e-5
            lo_lim, hi_lim = F32(na * total), F32(nb * total)
            l, r = sb, eb
            while l < eb and csum[l] < lo_lim:
                l += 1
            while r > sb and csum[r] > hi_lim:
                r -= 1
            ns, ne = sb, eb
            if (l - sb) > (eb - r):
                ns, alpha = l, na
            else:
                ne, beta = r, nb
            if ns == sb and ne == eb:
                continue
            norm = self.qerror(ns, ne)
            if norm > nmin:
                break
            nmin, sb, eb = norm, ns, ne
        return self.min + bw * F32(sb), self.min + bw * F32(eb + 1)

    def threshold(self):
        nmin, nmax = self.search()
        min_neg, max_pos = min(nmin, F32(0)), max(nmax, F32(0))
        scale = max(F32((max_pos - min_neg) / F32(255)), np.finfo(F32).eps)
        zp = -128 - int(np.round(min_neg / scale))
        zp = min(max(zp, -128), 127)
        return max(float(F32(scale * F32(max(128 + zp, 127 - zp)))), 1e-5)


# ---------------------------------------------------------------- driver
def calibrate(name, samples, op_index, op_count, N, out):
    size = samples.shape[1]
    mn, mx = None, None
    gh = None
    mse, ag, al, D = [], [], [], []
    per = 99.99 + op_index * ((99.999999 - 99.99) / op_count)
    R = int(N * size * (1 - per / 100)) + 1
    torch = TorchObserver(2048)
    for x in samples:
        x = x.astype(F32)
        mn = x.min() if mn is None else min(mn, x.min())
        mx = x.max() if mx is None else max(mx, x.max())
        absv = max(abs(mn), abs(mx))
        s = np.sort(x)
        D.append(s[:R])
        D.append(s[-R:])
        mse.append(threshold_mse(x))
        ag.append(aciq_gauss(x))
        al.append(aciq_laplace(x))
        if np.max(np.abs(x)) >= 1e-8:
            if gh is None:
                gh = GrowingHist(x, absv, 2048)
            else:
                gh.add(x, absv, 2048)
        torch.observe(x)
    mn, mx = float(mn), float(mx)
    absv = max(abs(mn), abs(mx))
    if absv <= 1e-5:
        mn, mx, absv = (-1e-5 if mn < 0 else 0.0), 1e-5, 1e-5

    def fin(v):
        return 1e-5 if (math.isnan(v) or v <= 1e-5) else v

    def clip(v):
        return absv if v > absv else v

    res = {}
    res["kl"] = (1.0 if gh is None else clip(float(kl_threshold(gh.hist, gh.width))), mn, mx)
    res["max"] = (absv, mn, mx)
    res["mse"] = (clip(math.fsum(mse) / len(mse)), mn, mx)
    res["aciq_gauss"] = (clip(math.fsum(ag) / len(ag)), mn, mx)
    res["aciq_laplace"] = (clip(math.fsum(al) / len(al)), mn, mx)
    Ds = np.sort(np.concatenate(D))
    hi, lo = Ds[-R:], Ds[:R][::-1]
    v = per / 100 * (N * size - 1)
    ratio = v - math.floor(v)

    def interp(a):
        return float(a[0]) + ratio * (float(a[1]) - float(a[0])) if len(a) > 1 else float(a[0])

    vmax, vmin = interp(hi), interp(lo)
    p99 = max(abs(vmax), abs(vmin))
    res["percentile9999"] = (clip(p99), max(vmin, mn), min(vmax, mx))
    absd = np.sort(np.abs(Ds))[-R:]
    res["abs_percentile"] = (interp(absd), 0.0, 0.0)
    res["torch_observer"] = (torch.threshold(), 0.0, 0.0)
    res["kl_bins"] = (float(0 if gh is None else len(gh.hist)), 0.0, 0.0)
    for k, (th, a, b) in res.items():
        if k not in ("abs_percentile", "kl_bins"):
            th = fin(th)
        out.write(f"{name} {k} {th!r} {a!r} {b!r}\n")


def main():
    data = np.load(sys.argv[1])
    with open(sys.argv[2]) as f:
        for line in f:
            if not line.strip():
                continue
            name, i, n_ops, N = line.split()
            calibrate(name, data[name], int(i), int(n_ops), int(N), sys.stdout)


if __name__ == "__main__":
    main()
