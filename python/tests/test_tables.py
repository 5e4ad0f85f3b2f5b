"""CalibrationTable and QuantizeTable load/save round trips, checked against the files' text."""

import qtune

TABLE = """\
# mlir version: 1.30
# mlir: m.mlir
# genetated time: 2026-01-01 00:00:00
# histogram number: 2048
# sample number: 4
# tune number: 5
###
# op_name    threshold    min    max
input 2.0000000 -1.0000000 2.0000000
conv1_Conv 5.1234567 0.0000000 6.0000000
#int4_th
conv1_Conv 1.0000000 0.0000000 1.0000000
"""


def test_calibration_table_round_trip(tmp_path):
    src = tmp_path / "cali_table"
    src.write_text(TABLE)
    t = qtune.CalibrationTable.load(src)
    assert list(t) == ["input", "conv1_Conv"]
    assert t["conv1_Conv"] == qtune.Threshold(5.1234567, 0.0, 6.0)
    assert t["input"].threshold == 2.0 and t.sample_number == 4
    t.save(tmp_path / "again")
    again = (tmp_path / "again").read_text()
    # Rows and the int4 section survive; a second round trip is a fixed point.
    assert "conv1_Conv 5.1234567 0.0000000 6.0000000\n" in again
    assert "#int4_th" in again
    t2 = qtune.CalibrationTable.load(tmp_path / "again")
    assert dict(t2) == dict(t)
    t2.save(tmp_path / "third")
    assert (tmp_path / "third").read_text() == again
    # Edits: change a row, add one at the end, delete one.
    t2["conv1_Conv"] = (3.0, -3.0, 3.0)
    t2["relu_Relu"] = qtune.Threshold(1.5, 0.0, 1.5)
    del t2["input"]
    t2.save(tmp_path / "edited")
    rows = [l.split() for l in (tmp_path / "edited").read_text().splitlines() if l and not l.startswith("#")]
    assert rows[:2] == [
        ["conv1_Conv", "3.0000000", "-3.0000000", "3.0000000"],
        ["relu_Relu", "1.5000000", "0.0000000", "1.5000000"],
    ]


def test_new_calibration_table(tmp_path):
    t = qtune.CalibrationTable({"a": (1.0, -1.0, 0.5)}, method="mse", sample_number=3)
    t.save(tmp_path / "t")
    back = qtune.CalibrationTable.load(tmp_path / "t")
    assert dict(back) == {"a": qtune.Threshold(1.0, -1.0, 0.5)}
    assert back.method == "mse" and back.sample_number == 3
    assert t.to_text() == (tmp_path / "t").read_text()


def test_quantize_table_round_trip(tmp_path):
    src = tmp_path / "q"
    src.write_text("# a comment\n\nconv1 f16\nlonely\nfc W8F16\n")
    q = qtune.QuantizeTable.load(src)
    assert dict(q) == {"conv1": "F16", "fc": "W8F16"}
    assert q.skipped == [(4, "lonely")]
    q["relu"] = "bf16"
    q.save(tmp_path / "q2")
    back = qtune.QuantizeTable.load(tmp_path / "q2")
    assert list(back.items()) == [("conv1", "F16"), ("fc", "W8F16"), ("relu", "BF16")]
    text = (tmp_path / "q2").read_text()
    assert "conv1 F16\n" in text and "relu BF16\n" in text
