"""Console scripts: the command-line tools, run in this process.

Each script calls the same Rust entry point as the binary of that name
(``qtune_cli::tool_main``). Python's own SIGINT handler is replaced by the
default action first, so that Ctrl-C ends the tool at once, as it ends the
binary, instead of waiting for the Rust code to return to the interpreter.
"""

import signal
import sys

from . import _native


def _run(tool: str) -> "None":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = _native.tool_main(tool, list(sys.argv))
    sys.stdout.flush()
    sys.exit(code)


def qtune() -> None:
    _run("qtune")


def model_transform() -> None:
    _run("model_transform")


def run_calibration() -> None:
    _run("run_calibration")


def model_deploy() -> None:
    _run("model_deploy")


def fp_forward() -> None:
    _run("fp_forward")


def run_qtable() -> None:
    _run("run_qtable")


def run_sensitive_layer() -> None:
    _run("run_sensitive_layer")
