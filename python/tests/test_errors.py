"""Bad inputs raise qtune's typed exceptions, never crash the interpreter."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import qtune


def test_hierarchy():
    assert issubclass(qtune.InputError, qtune.QtuneError)
    assert issubclass(qtune.UnsupportedError, qtune.QtuneError)
    assert issubclass(qtune.QtuneError, Exception)
    assert qtune.QtuneError.__module__ == "qtune"


def test_missing_model_is_input_error(tmp_path):
    with pytest.raises(qtune.InputError, match="nope.onnx"):
        qtune.run(tmp_path / "nope.onnx", {"x": np.zeros(1, np.float32)})


def test_garbage_model_is_input_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01not a model at all")
    with pytest.raises(qtune.InputError, match="bad.onnx"):
        qtune.run(bad, {"x": np.zeros(1, np.float32)})


def test_wrong_input_name_shape_and_dtype(workloads):
    model = workloads / "models" / "efficientnet_lite0.onnx"
    with pytest.raises(qtune.InputError, match="input"):
        qtune.run(model, {"not_input": np.zeros((1, 3, 224, 224), np.float32)})
    with pytest.raises(qtune.InputError):
        qtune.run(model, {"input": np.zeros((1, 3, 200, 224), np.float32)})
    with pytest.raises(qtune.InputError, match="float64"):
        qtune.run(model, {"input": np.zeros((1, 3, 224, 224), np.float64)})
    with pytest.raises(qtune.InputError, match="dtype <U1"):
        qtune.run(model, {"input": np.array(["a"])})


def test_unsupported_op_is_unsupported_error(tmp_path):
    # A one-node model whose op qtune does not implement.
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    path = tmp_path / "einsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(qtune.UnsupportedError, match="Einsum"):
        qtune.run(path, {"a": np.eye(2, dtype=np.float32), "b": np.eye(2, dtype=np.float32)})


def test_unknown_option_is_input_error(demo, tmp_path):
    with pytest.raises(qtune.InputError, match="no_such_flag"):
        qtune.calibrate(demo / "efficientnet_lite0.onnx", demo / "images", tmp_path / "t", no_such_flag=3)


def test_bad_calibration_data(demo, tmp_path):
    model = demo / "efficientnet_lite0.onnx"
    with pytest.raises(qtune.InputError, match="no such folder"):
        qtune.calibrate(model, tmp_path / "missing", tmp_path / "t")
    with pytest.raises(qtune.InputError, match="wrap it in a list"):
        qtune.calibrate(model, np.zeros((1, 3, 224, 224), np.float32), tmp_path / "t")
    with pytest.raises(qtune.InputError, match="no samples"):
        qtune.calibrate(model, [], tmp_path / "t")
    with pytest.raises(qtune.InputError, match="int"):
        qtune.calibrate(model, 42, tmp_path / "t")


def test_bad_tables(tmp_path):
    bad = tmp_path / "q"
    bad.write_text("conv1 F17\n")
    with pytest.raises(qtune.InputError, match="F17"):
        qtune.QuantizeTable.load(bad)
    with pytest.raises(qtune.InputError):
        qtune.CalibrationTable.load(tmp_path / "missing_table")
    garbage = tmp_path / "t"
    garbage.write_text("conv1 notanumber 1 2\n")
    with pytest.raises(qtune.InputError, match="t"):
        qtune.CalibrationTable.load(garbage)
    q = qtune.QuantizeTable()
    with pytest.raises(qtune.InputError, match="F17"):
        q["conv1"] = "F17"
    t = qtune.CalibrationTable()
    with pytest.raises(qtune.InputError):
        t["a b"] = (1.0, -1.0, 1.0)
    with pytest.raises(qtune.InputError, match="got 2 values"):
        t["a"] = (1.0, 2.0)
