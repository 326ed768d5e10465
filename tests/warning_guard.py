"""Fail a test when this project's code calls something deprecated, also when a library wraps the call.

pyproject.toml's `filterwarnings` turns a DeprecationWarning or FutureWarning attributed to one of our
modules into an error. A warning is attributed to the frame `stacklevel` frames above the `warn` call,
which for a plain deprecated function is its caller: our code. But transformers deprecates keyword
arguments with a decorator under its other decorators and torch's `Module.__call__`, so `stacklevel=2`
lands on a library wrapper (e.g. transformers/utils/output_capturing.py or torch/nn/modules/module.py)
and no `module` filter can tell our call from the library's own.

So, while each test runs, `warnings.showwarning` (the documented hook for a warning that got past the
filters) is wrapped: from the frame the warning is attributed to, it steps outward over library frames
that only forward their arguments (`*args, **kwargs`, which is what wrappers and `Module.__call__` look
like) and raises the warning if the frame it reaches is the project's: a file under pytest's rootdir
outside any site-packages. A library calling its own deprecated API stops at a library frame that does
real work, so that warning is only shown, in the usual summary.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Generator
from pathlib import Path
from types import FrameType

import pytest

_DEPRECATIONS = (DeprecationWarning, FutureWarning)
_FORWARDS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def _is_project_file(filename: str, root: Path) -> bool:
    path = Path(os.path.abspath(filename))
    return path.is_relative_to(root) and "site-packages" not in path.relative_to(root).parts


def _attributed_frame(filename: str, lineno: int) -> FrameType | None:
    frame = inspect.currentframe()
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back
    return frame


def called_from_project(filename: str, lineno: int, root: Path) -> bool:
    """Whether the warning attributed to `filename:lineno` comes from a call in the project's code.

    Must run inside the `warnings.warn` call (the frames are read off the live stack).
    """
    frame = _attributed_frame(filename, lineno)
    if frame is None:  # warn_explicit with a made-up location: judge by the location alone
        return _is_project_file(filename, root)
    while frame is not None and not _is_project_file(frame.f_code.co_filename, root) and _forwards(frame):
        frame = frame.f_back
    return frame is not None and _is_project_file(frame.f_code.co_filename, root)


def _forwards(frame: FrameType) -> bool:
    return frame.f_code.co_flags & _FORWARDS == _FORWARDS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    # Runs inside pytest's own per-test `catch_warnings`, whose `showwarning` records for the summary.
    root, show = item.config.rootpath, warnings.showwarning

    def raise_or_show(message, category, filename, lineno, file=None, line=None):
        __tracebackhide__ = True
        if issubclass(category, _DEPRECATIONS) and called_from_project(filename, lineno, root):
            raise message if isinstance(message, Warning) else category(message)
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = raise_or_show
    try:
        return (yield)
    finally:
        warnings.showwarning = show
