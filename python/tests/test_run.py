"""qtune.run and qtune.compare against ONNX Runtime, on the workload models."""

import numpy as np
import onnxruntime as ort
import pytest

import qtune

# float32 noise between two correct executors of these models (the golden
# README measures 5e-6 between ORT's own optimisation levels).
MAX_ABS_DIFF = 1e-3
MIN_COSINE = 0.99999


def ort_run(model, inputs):
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def test_run_efficientnet_matches_golden_and_onnxruntime(workloads):
    model = workloads / "models" / "efficientnet_lite0.onnx"
    inputs = dict(np.load(workloads / "golden" / "efficientnet_lite0" / "input.npz"))
    golden = dict(np.load(workloads / "golden" / "efficientnet_lite0" / "output.npz"))
    x = inputs["input"]
    assert x.shape == (2, 3, 224, 224)
    # Two samples stacked on axis 0 of a [1, 3, 224, 224] input run as two.
    out = qtune.run(model, inputs)
    assert list(out) == ["logits"]
    logits = out["logits"]
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, golden["logits"], atol=MAX_ABS_DIFF, rtol=0)
    # Live ONNX Runtime, one sample, and qtune's own comparison of the two.
    ref = ort_run(model, {"input": x[1:2]})["logits"]
    one = qtune.run(model, {"input": x[1:2]}, threads=1)["logits"]
    np.testing.assert_allclose(one, ref, atol=MAX_ABS_DIFF, rtol=0)
    c = qtune.compare(one, ref)
    assert c.passed and c.cosine > MIN_COSINE, c
    # The top class agrees with ONNX Runtime's.
    assert int(np.argmax(one)) == int(np.argmax(ref))


def test_run_results_do_not_depend_on_threads(workloads):
    model = workloads / "models" / "efficientnet_lite0.onnx"
    x = np.load(workloads / "golden" / "efficientnet_lite0" / "input.npz")["input"]
    a = qtune.run(model, {"input": x}, threads=1)["logits"]
    b = qtune.run(model, {"input": x}, threads=2)["logits"]
    assert a.tobytes() == b.tobytes()


def test_run_accepts_non_contiguous_input(workloads):
    model = workloads / "models" / "efficientnet_lite0.onnx"
    x = np.load(workloads / "golden" / "efficientnet_lite0" / "input.npz")["input"][:1]
    # The same values through a transposed (non-C-contiguous) view.
    view = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not view.flags["C_CONTIGUOUS"]
    a = qtune.run(model, {"input": x})["logits"]
    b = qtune.run(model, {"input": view})["logits"]
    assert a.tobytes() == b.tobytes()


def test_run_minilm_matches_golden(workloads):
    model = workloads / "models" / "minilm_l6_s128.onnx"
    inputs = dict(np.load(workloads / "golden" / "minilm_l6_s128" / "input.npz"))
    golden = dict(np.load(workloads / "golden" / "minilm_l6_s128" / "output.npz"))
    out = qtune.run(model, inputs)
    assert set(out) == set(golden)
    for name, ref in golden.items():
        c = qtune.compare(out[name], ref)
        assert c.cosine > MIN_COSINE, (name, c)
        np.testing.assert_allclose(out[name], ref, atol=MAX_ABS_DIFF, rtol=0)


def test_compare_measures_against_numpy():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal(1000).astype(np.float32)
    noisy = ref + 0.1 * rng.standard_normal(1000).astype(np.float32)
    c = qtune.compare(noisy, ref)
    a, b = noisy.astype(np.float64), ref.astype(np.float64)
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    # TPU-MLIR's SQNR: the target's variance over the variance of the noise.
    noise = (a - b) - (a - b).mean()
    sqnr = 10 * np.log10(((a - a.mean()) @ (a - a.mean())) / (noise @ noise))
    euclid = 1 - np.linalg.norm(a - b) / (np.linalg.norm((a + b) / 2) + 1e-7)
    assert c.cosine == pytest.approx(cos, abs=1e-9)
    assert c.euclidean == pytest.approx(euclid, abs=1e-9)
    assert c.sqnr == pytest.approx(sqnr, abs=1e-6)
    assert c.max_abs_diff == pytest.approx(np.abs(a - b).max(), abs=1e-9)
    assert c.verdict == "NOT_SIMILAR"  # euclidean similarity ~0.9 < 0.99
    assert qtune.compare(noisy, ref, tolerance=(0.99, 0.85)).verdict == "SIMILAR"
    assert qtune.compare(ref, ref).verdict == "EQUAL"
    assert qtune.compare(-ref, ref).verdict == "NOT_SIMILAR"
    assert qtune.compare(ref[:10], ref).verdict == "NOT_MATCH"
    by_name = qtune.compare({"x": noisy, "only_a": ref}, {"x": ref})
    assert list(by_name) == ["x"] and by_name["x"] == c


def test_npz_round_trip(tmp_path):
    arrays = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i": np.array([1, -2, 3], dtype=np.int64),
        "b": np.array([True, False]),
    }
    qtune.save_npz(tmp_path / "a.npz", arrays)
    back = qtune.load_npz(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as theirs:
        for k, v in arrays.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
            assert np.array_equal(theirs[k], v)
