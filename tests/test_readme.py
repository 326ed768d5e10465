"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_block(heading: str) -> str:
    """The first ```python block under a `## heading` of the README."""
    section = REPO.joinpath("README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_notebook_example_runs(tmp_path: Path):
    result = subprocess.run([sys.executable, "-c", readme_block("In a notebook")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stderr" in result.stdout and "n_mechanism_heads" in result.stdout
    assert (tmp_path / "notebook.duckdb").exists()
