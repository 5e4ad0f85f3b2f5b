"""Shared fixtures: the workloads next to the repository and the bundled demo."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKLOADS = pathlib.Path(os.environ.get("QTUNE_WORKLOADS", ROOT.parent / "shared" / "workloads"))
DEMO = ROOT / "assets" / "demo"

# The demo model's preprocessing (scripts/demo.sh, models.toml).
DEMO_PREPROCESS = dict(
    resize_dims="224,224",
    pixel_format="rgb",
    mean="127,127,127",
    scale="0.0078125,0.0078125,0.0078125",
)


@pytest.fixture(scope="session")
def workloads() -> pathlib.Path:
    if not (WORKLOADS / "models").is_dir():
        pytest.fail(f"{WORKLOADS} is missing: run scripts/fetch-workloads.sh {WORKLOADS}")
    return WORKLOADS


@pytest.fixture(scope="session")
def demo() -> pathlib.Path:
    return DEMO
