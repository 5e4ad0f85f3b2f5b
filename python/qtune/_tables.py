"""Calibration tables and qtables (TPU-MLIR's file formats)."""

import os
from typing import Dict, Iterable, Iterator, List, Mapping, MutableMapping, NamedTuple, Tuple, Union

from . import _native

PathLike = Union[str, "os.PathLike[str]"]


class Threshold(NamedTuple):
    """One row of a calibration table: the symmetric threshold and the range."""

    threshold: float
    min: float
    max: float


class CalibrationTable(MutableMapping[str, Threshold]):
    """A calibration table: tensor name -> :class:`Threshold`.

    Reads and writes TPU-MLIR's format with qtune's reader and writer (the
    ones ``run_calibration`` and ``model_deploy`` use): the old 4-line header
    and the ``# mlir version`` one, ``#int4_th``/``#asym_op``/``#weight_scale``
    sections and fp8 tables. A ``load`` then ``save`` keeps the header and the
    sections; rows keep their order, new rows go last.

    >>> table = qtune.CalibrationTable.load("m_cali_table")
    >>> table["input"].threshold
    >>> table["conv1"] = qtune.Threshold(4.0, -3.5, 4.0)
    >>> table.save("m_cali_table_edited")
    """

    def __init__(
        self,
        rows: Union[Mapping[str, Iterable[float]], Iterable[Tuple[str, float, float, float]], None] = None,
        *,
        method: str = "kl",
        sample_number: int = 0,
    ) -> None:
        self._native = _native.NativeCalibrationTable()
        self._native.method = method
        self._native.sample_number = sample_number
        self._rows: Dict[str, Threshold] = {}
        if rows is None:
            return
        items = rows.items() if isinstance(rows, Mapping) else ((r[0], r[1:]) for r in rows)
        for name, value in items:
            self[name] = value  # type: ignore[assignment]

    @classmethod
    def load(cls, path: PathLike) -> "CalibrationTable":
        """Reads a calibration table file; raises :class:`qtune.InputError` when
        it cannot be read or parsed (the message names the file and line)."""
        native = _native.NativeCalibrationTable.read(os.fspath(path))
        table = cls.__new__(cls)
        table._native = native
        table._rows = {name: Threshold(th, lo, hi) for name, th, lo, hi in native.rows()}
        return table

    def save(self, path: PathLike) -> None:
        """Writes the table (atomically) in TPU-MLIR's layout: ``name
        threshold min max`` rows with 7 decimals."""
        self._native.set_rows([(name, *row) for name, row in self._rows.items()])
        self._native.write(os.fspath(path))

    def to_text(self) -> str:
        """The text :meth:`save` writes."""
        self._native.set_rows([(name, *row) for name, row in self._rows.items()])
        return self._native.to_text()

    @property
    def method(self) -> str:
        """The calibration method of the header (``kl``; ``['kl']`` when tuned)."""
        return self._native.method

    @property
    def sample_number(self) -> int:
        """The number of calibration samples of the header."""
        return self._native.sample_number

    def warnings(self) -> List[str]:
        """What the reader set aside (rows with NaN or inf) or does not apply."""
        return self._native.warnings()

    def __getitem__(self, name: str) -> Threshold:
        return self._rows[name]

    def __setitem__(self, name: str, value: Iterable[float]) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise _native.InputError(f"calibration table: tensor name {name!r} must be one word without whitespace")
        values = tuple(value)
        if len(values) != 3:
            raise _native.InputError(
                f"calibration table row `{name}`: expected (threshold, min, max), got {len(values)} values"
            )
        self._rows[name] = Threshold(*(float(v) for v in values))

    def __delitem__(self, name: str) -> None:
        del self._rows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"<CalibrationTable: {len(self)} tensors, method {self.method}>"


class QuantizeTable(MutableMapping[str, str]):
    """A qtable: layer (op) name -> quantize mode (``"F16"``, ``"F32"``,
    ``"BF16"``, ``"INT8"``, ``"W8F16"``, ...).

    ``load`` reads it as TPU-MLIR's lowering does (``#`` and blank lines are
    comments, one-token lines are skipped and listed in :attr:`skipped`,
    modes in any case, an unknown mode is an :class:`qtune.InputError`);
    ``save`` writes TPU-MLIR's ``QuantizeTable`` layout.
    """

    def __init__(self, rows: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None, *, chip: str = "bm1684x") -> None:
        self.chip = chip
        self.skipped: List[Tuple[int, str]] = []
        self._rows: Dict[str, str] = {}
        if rows is not None:
            items = rows.items() if isinstance(rows, Mapping) else rows
            for name, mode in items:
                self[name] = mode

    @classmethod
    def load(cls, path: PathLike, *, chip: str = "bm1684x") -> "QuantizeTable":
        """Reads a qtable file."""
        rows, skipped = _native.read_qtable(os.fspath(path))
        table = cls(chip=chip)
        for name, mode in rows:
            table._rows[name] = mode
        table.skipped = list(skipped)
        return table

    def save(self, path: PathLike) -> None:
        """Writes the qtable (atomically); an unknown mode is an :class:`qtune.InputError`."""
        _native.write_qtable(os.fspath(path), list(self._rows.items()), self.chip)

    def __getitem__(self, name: str) -> str:
        return self._rows[name]

    def __setitem__(self, name: str, mode: str) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name) or name.startswith("#"):
            raise _native.InputError(f"qtable: layer name {name!r} must be one word without whitespace, not starting with '#'")
        if not isinstance(mode, str) or mode.upper() not in _native.QUANT_MODES:
            raise _native.InputError(
                f"qtable layer `{name}`: unknown quantize mode {mode!r} (expected one of {', '.join(_native.QUANT_MODES)}, in any case)"
            )
        self._rows[name] = mode.upper()

    def __delitem__(self, name: str) -> None:
        del self._rows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"<QuantizeTable: {len(self)} layers, chip {self.chip}>"


def loss_table(path: PathLike) -> List[Tuple[str, float]]:
    """Reads a loss table written by the searches (``full_loss_table.txt``,
    ``<qtable>_loss.txt``): ``(layer, value)`` per row, comment lines skipped."""
    out: List[Tuple[str, float]] = []
    with open(os.fspath(path), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            # run_qtable's rows read `No.0 : Layer: <name>  Cos: 0.97`.
            name = parts[parts.index("Layer:") + 1] if "Layer:" in parts[:-1] else parts[0]
            try:
                out.append((name, float(parts[-1])))
            except ValueError:
                continue
    return out

