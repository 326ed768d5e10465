"""Fixtures for report tests: synthetic warehouses, rendered reports and a headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reports.report import render_report
from tests.reports.chromium import Browser, chromium_path
from tests.reports.synthetic_warehouse import Dynamics, SyntheticModel, build_warehouse, toy_suite

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toy_models() -> list[SyntheticModel]:
    return toy_suite()


@pytest.fixture(scope="session")
def toy_warehouse(tmp_path_factory: pytest.TempPathFactory, toy_models: list[SyntheticModel]) -> tuple[Path, dict[str, Dynamics]]:
    """(path, dynamics per model) of a read-only warehouse of three toy models with every metric."""
    path = tmp_path_factory.mktemp("toy_warehouse") / "warehouse.duckdb"
    return path, build_warehouse(path, toy_models)


@pytest.fixture(scope="session")
def toy_report(tmp_path_factory: pytest.TempPathFactory, toy_warehouse: tuple[Path, dict]) -> Path:
    """The index page of the toy warehouse's report, rendered once per session (read-only)."""
    return render_report(toy_warehouse[0], tmp_path_factory.mktemp("toy_report") / "report")


@pytest.fixture(scope="session")
def browser() -> Browser:
    """One headless Chromium for the session, network cut; skips when Chromium is not installed."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed; run `make browser` (apt-get install chromium)")
    with Browser(executable) as running:
        yield running


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where chart screenshots go: $DYNAMICS_ARTIFACTS/report-screenshots, else artifacts/ in the repo."""
    root = Path(os.environ.get("DYNAMICS_ARTIFACTS", REPO_ROOT / "artifacts"))
    folder = root / "report-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
