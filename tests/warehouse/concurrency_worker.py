"""A writer or a reader process for test_warehouse_concurrency.py; prints a JSON summary on stdout
(the reader first prints 'ready' once imported, so the test can start the writer after it).

    python concurrency_worker.py writer PATH N_CHECKPOINTS
    python concurrency_worker.py reader PATH STOP_FILE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl

from warehouse import queries, writes

N_LAYERS, N_HEADS, METRICS, TASKS = 4, 8, ("induction", "prev_token", "duplicate_token", "copying", "fv"), 3
SCORING_S = 0.05  # stands in for scoring the next checkpoint: a real sweep writes seconds apart
ROWS_PER_CHECKPOINT = N_LAYERS * N_HEADS * len(METRICS)
TASK_ROWS_PER_CHECKPOINT = N_LAYERS * N_HEADS * TASKS

# per ok checkpoint: its head, task and metric row counts; a partial write would show other numbers
COUNT_SQL = """
SELECT c.step,
       (SELECT count(*) FROM head_scores h WHERE h.model = c.model AND h.step = c.step) AS heads,
       (SELECT count(*) FROM head_task_scores t WHERE t.model = c.model AND t.step = c.step) AS tasks,
       (SELECT count(*) FROM checkpoint_metrics m WHERE m.model = c.model AND m.step = c.step) AS metrics
FROM checkpoints c WHERE c.status = 'ok'
"""


def _frame(step: int, task: str | None = None) -> pl.DataFrame:
    metrics = ("fv",) if task else METRICS
    rows = [{"model": "m", "step": step, "settings_hash": "s", **({"task": task} if task else {}), "layer": layer,
             "head": head, "metric": metric, "value": float(step + layer + head), "flag": None}
            for metric in metrics for layer in range(N_LAYERS) for head in range(N_HEADS)]
    return pl.DataFrame(rows, schema_overrides={"layer": pl.Int32, "head": pl.Int32, "flag": pl.Utf8})


def write(path: Path, n_checkpoints: int) -> dict:
    started = time.monotonic()
    for step in range(n_checkpoints):
        tasks = pl.concat([_frame(step, f"task{t}") for t in range(TASKS)])
        metrics = pl.DataFrame({"model": "m", "step": step, "settings_hash": "s", "metric": ["icl_token_loss"],
                                "value": [0.5], "flag": pl.Series([None], dtype=pl.Utf8)})
        writes.write_checkpoint(path, {"model": "m", "step": step, "settings_hash": "s"}, _frame(step), tasks, metrics)
        time.sleep(SCORING_S)
    return {"written": n_checkpoints, "elapsed_s": time.monotonic() - started}


def read(path: Path, stop_file: Path) -> dict:
    n_queries, failures, partial, seen = 0, [], [], set()
    print("ready", flush=True)
    while not stop_file.exists() or n_queries < 5:
        try:
            counts = queries.query(path, COUNT_SQL) if path.exists() else None
        except Exception as err:  # the test asserts that none happen, so record rather than stop
            failures.append(f"{type(err).__name__}: {err}")
            continue
        n_queries += 1
        if counts is not None:
            seen.add(len(counts))
            partial += [row for row in counts.iter_rows()
                        if row[1:] != (ROWS_PER_CHECKPOINT, TASK_ROWS_PER_CHECKPOINT, 1)]
        time.sleep(0.005)
    return {"queries": n_queries, "failures": failures, "partial": partial, "distinct_ok_counts": sorted(seen)}


if __name__ == "__main__":
    role, target, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    summary = write(target, int(arg)) if role == "writer" else read(target, Path(arg))
    print(json.dumps(summary))
