"""The console scripts run the seed's commands, in-process, like the binaries."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import qtune
from conftest import DEMO_PREPROCESS


def script(name):
    path = shutil.which(name)
    assert path, f"console script {name} is not installed on PATH"
    return path


def test_every_script_is_installed():
    for tool in ["qtune", "model_transform", "run_calibration", "model_deploy", "fp_forward", "run_qtable",
                 "run_sensitive_layer"]:
        out = subprocess.run([script(tool), "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "Usage" in out.stdout
        if tool != "qtune":
            dotted = subprocess.run([script(tool + ".py"), "--version"], capture_output=True, text=True)
            assert dotted.returncode == 0 and dotted.stdout.startswith(tool), dotted


def test_seed_commands_transform_calibrate_deploy(demo, tmp_path):
    """model_transform.py, run_calibration.py and model_deploy.py as the seed spells them."""
    pre = DEMO_PREPROCESS
    r = subprocess.run(
        [script("model_transform.py"), "--model_name", "efficientnet_lite0",
         "--model_def", str(demo / "efficientnet_lite0.onnx"), "--input_shapes", "[[1,3,224,224]]",
         "--resize_dims", pre["resize_dims"], "--pixel_format", pre["pixel_format"],
         "--mean", pre["mean"], "--scale", pre["scale"],
         "--test_input", str(demo / "images" / "darknet_eagle.jpg"),
         "--test_result", "top_outputs.npz", "--mlir", "m.mlir"],
        cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([script("run_calibration.py"), "m.mlir", "--dataset", str(demo / "images"),
                        "--input_num", "4", "--tune_num", "1", "-o", "cali_table"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = qtune.CalibrationTable.load(tmp_path / "cali_table")
    assert table.sample_number == 4 and len(table) > 50
    r = subprocess.run([script("model_deploy.py"), "--mlir", "m.mlir", "--quantize", "INT8",
                        "--processor", "bm1684x", "--calibration_table", "cali_table",
                        "--test_input", "efficientnet_lite0_in_f32.npz", "--test_reference", "top_outputs.npz",
                        "--model", "m_int8.onnx"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m_int8.onnx").is_file()


def test_script_exit_codes(tmp_path):
    r = subprocess.run([script("run_calibration"), "--no_such_flag"], capture_output=True, text=True)
    assert r.returncode == 2 and "--no_such_flag" in r.stderr
    r = subprocess.run([script("qtune"), "info", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert r.returncode == 2 and "missing.onnx" in r.stderr
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    qtune.save_npz(a, {"x": np.ones(8, np.float32)})
    qtune.save_npz(b, {"x": -np.ones(8, np.float32)})
    r = subprocess.run([script("qtune"), "compare", str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 1, r


def test_ctrl_c_stops_a_script(demo, tmp_path):
    """SIGINT ends a running tool at once (default action), as it ends the binary."""
    # A threshold search (four calibrations, then the search: about 5 s here before it
    # writes `t`), so that the tool is still at work when the signal comes: a plain
    # calibration of the demo ends within the 1.5 s since the pointwise kernel.
    p = subprocess.Popen([script("run_calibration"), str(demo / "efficientnet_lite0.onnx"),
                          "--dataset", str(demo / "images"), "--input_num", "32", "--tune_num", "32",
                          "--resize_dims", "224,224", "--search", "search_threshold",
                          "-o", str(tmp_path / "t")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    assert p.poll() is None, "the calibration ended before the signal"
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=10)
    assert time.monotonic() - t0 < 5
    assert code == -signal.SIGINT
    assert not (tmp_path / "t").exists()
