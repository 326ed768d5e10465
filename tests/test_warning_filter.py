"""The default test run fails on a deprecation our code calls, and only on those (pyproject.toml, tests/warning_guard.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache, GPTNeoXConfig, GPTNeoXModel

REPO = Path(__file__).resolve().parents[1]

# A stand-in library: one deprecated function, and a renamed keyword argument behind a pass-through decorator
# and a `__call__`, laid out as transformers deprecates `past_key_values` under its decorators and torch's Module.
FAKE_LIBRARY = '''
import functools
import warnings


def old_function():
    warnings.warn("old_function is deprecated", DeprecationWarning, stacklevel=2)


def renamed_argument(func):
    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        if "old" in kwargs:
            warnings.warn("`old` is deprecated, use `new`", FutureWarning, stacklevel=2)
            kwargs["new"] = kwargs.pop("old")
        return func(*args, **kwargs)
    return wrapped


def passes_through(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


class Model:
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    @passes_through
    @renamed_argument
    def forward(self, new=None):
        return new


def uses_old_function_itself():
    old_function()


def runs_model_the_old_way():
    return Model()(old=1)
'''

PROBE_TESTS = '''
import fakelib


def test_direct_call():
    fakelib.old_function()


def test_call_through_wrappers():
    fakelib.Model()(old=1)


def test_new_argument():
    assert fakelib.Model()(new=1) == 1


def test_library_calls_its_own_deprecated_function():
    fakelib.uses_old_function_itself()


def test_library_passes_its_own_deprecated_argument():
    fakelib.runs_model_the_old_way()
'''


def run_probe(tmp_path: Path, *plugins: str) -> tuple[dict[str, str], str]:
    """Run the probe tests with this project's pytest config and `plugins`; outcome per test, and the output."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "fakelib.py").write_text(textwrap.dedent(FAKE_LIBRARY))
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "test_probe.py").write_text(textwrap.dedent(PROBE_TESTS))
    plugin_args = [arg for plugin in plugins for arg in ("-p", plugin)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "lib"), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path / "project"),
         "-p", "no:cacheprovider", *plugin_args, "-rA", str(tmp_path / "project" / "test_probe.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    outcomes = {test: outcome for outcome, test in re.findall(r"^(PASSED|FAILED) \S*::(\w+)", result.stdout, re.MULTILINE)}
    return outcomes, result.stdout + result.stderr


def test_project_calls_fail_and_library_internal_ones_only_show(tmp_path: Path) -> None:
    outcomes, output = run_probe(tmp_path, "tests.warning_guard")
    assert outcomes == {
        "test_direct_call": "FAILED",
        "test_call_through_wrappers": "FAILED",
        "test_new_argument": "PASSED",
        "test_library_calls_its_own_deprecated_function": "PASSED",
        "test_library_passes_its_own_deprecated_argument": "PASSED",
    }, output
    assert re.search(r"^E +FutureWarning: `old` is deprecated", output, re.MULTILINE), output  # raised as itself
    assert "warnings summary" in output and "old_function is deprecated" in output  # shown, not lost


def test_the_module_filter_alone_misses_calls_through_wrappers(tmp_path: Path) -> None:
    """Why tests/warning_guard.py exists: the wrapped call is attributed to the library's wrapper."""
    outcomes, output = run_probe(tmp_path)
    assert outcomes["test_direct_call"] == "FAILED", output
    assert outcomes["test_call_through_wrappers"] == "PASSED", output


def test_this_run_fails_a_deprecated_transformers_argument() -> None:
    """The guard is on here (tests/conftest.py), and sees through transformers' real decorators."""
    model = GPTNeoXModel(GPTNeoXConfig(
        hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=32, vocab_size=16))
    with pytest.raises(FutureWarning, match="past_key_values"):
        model(input_ids=torch.tensor([[1, 2]]), past_key_values=DynamicCache(), use_cache=True)
