"""Provenance that travels with every stored number: what was scored, how, and by which code."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dynamics import __version__


@cache
def code_version() -> str:
    """Package version plus the git commit of the checkout (with '+dirty' for uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+{commit}{'.dirty' if dirty else ''}"


def settings_hash(settings: dict) -> str:
    """Short stable hash of a settings dict; rows scored with equal settings share it."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Provenance:
    """Where a checkpoint's scores came from. One per scored checkpoint."""

    model: str
    revision: str
    step: int
    weights_sha256: str
    dtype: str
    attn_implementation: str
    settings: dict = field(default_factory=dict)  # probe and task settings, seeds, prompt-set hashes
    code_version: str = field(default_factory=code_version)

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings)

    def columns(self) -> dict:
        """The provenance columns every score row carries."""
        return {
            "model": self.model,
            "revision": self.revision,
            "step": self.step,
            "weights_sha256": self.weights_sha256,
            "dtype": self.dtype,
            "attn_impl": self.attn_implementation,
            "settings_hash": self.settings_hash,
            "code_version": self.code_version,
        }
