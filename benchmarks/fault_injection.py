#!/usr/bin/env python
"""Run the whole fault-injection suite (tests/faults, slow cases included) and print its figures.

    python benchmarks/fault_injection.py [extra pytest arguments]

Each test in tests/faults asserts its own outcome and appends its figures to a JSON-lines file; this
script sums them: faults injected, sweeps finished, rows lost, duplicate rows, wrong rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("faults", "sweeps_finished", "rows_lost", "duplicate_rows", "wrong_rows")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.jsonl"
        started = time.perf_counter()
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/faults", "-m", "slow or not slow", "-q", "-p", "no:cacheprovider", *argv],
            cwd=REPO, env={**os.environ, "FAULT_FIGURES": str(figures_file)},
        )
        elapsed = time.perf_counter() - started
        records = [json.loads(line) for line in figures_file.read_text().splitlines()] if figures_file.exists() else []
    per_case: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIGURES, 0))
    for record in records:
        for name in FIGURES:
            per_case[record["case"]][name] += record[name]
    width = max(map(len, [*per_case, "total"])) + 2
    print(f"{'case':<{width}}" + "".join(f"{name:>16}" for name in FIGURES))
    for case, values in per_case.items():
        print(f"{case:<{width}}" + "".join(f"{values[name]:>16}" for name in FIGURES))
    totals = {name: sum(values[name] for values in per_case.values()) for name in FIGURES}
    print(f"{'total':<{width}}" + "".join(f"{totals[name]:>16}" for name in FIGURES))
    print(f"pytest exit status {tests.returncode}; {elapsed:.0f} s")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
