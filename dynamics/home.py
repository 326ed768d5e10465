"""The service's home folder, `$DYNAMICS_HOME` (default `~/.cache/training-dynamics`), like `HF_HOME` for the Hub.

It holds the default warehouse and report and the toy suite cache (`toy/<config hash>/`).
"""

from __future__ import annotations

import os
from pathlib import Path

from dynamics.errors import InputError

ENV = "DYNAMICS_HOME"


def dynamics_home() -> Path:
    """`$DYNAMICS_HOME`, or `~/.cache/training-dynamics` when it is unset; not created here."""
    value = os.environ.get(ENV)
    if value is None:
        return Path.home() / ".cache" / "training-dynamics"
    if not value.strip():
        raise InputError(f"{ENV} is set but empty; unset it (default ~/.cache/training-dynamics) or point it at a folder")
    home = Path(value).expanduser()
    if home.exists() and not home.is_dir():
        raise InputError(f"{ENV}={value} is a file, not a folder; point {ENV} at a folder (it is created if missing)")
    return home
