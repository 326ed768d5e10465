"""A reader for the live-sweep fault test: queries the warehouse in a loop until STOP_FILE appears.

    python reader_loop.py WAREHOUSE STOP_FILE EXPECTED_JSON

EXPECTED_JSON maps each step to the (head, task, metric) row counts it must have once it is 'ok'.
Prints a JSON summary: queries run, failures (with messages), and partial checkpoints seen.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from warehouse.queries import query

PAUSE_S = 0.02  # between queries: a tight loop would starve the sweep of one of the two test cores
# per checkpoint (whatever its status): its row counts; one read-only connection sees one snapshot
COUNT_SQL = """
SELECT c.step, c.status,
       (SELECT count(*) FROM head_scores h WHERE h.model = c.model AND h.step = c.step) AS heads,
       (SELECT count(*) FROM head_task_scores t WHERE t.model = c.model AND t.step = c.step) AS tasks,
       (SELECT count(*) FROM checkpoint_metrics m WHERE m.model = c.model AND m.step = c.step) AS metrics
FROM checkpoints c
"""


def main(warehouse: Path, stop_file: Path, expected: dict) -> dict:
    summary = {"queries": 0, "failures": [], "partial": [], "max_ok_seen": 0}
    ready = False  # the file exists before the driver's schema transaction commits
    while not stop_file.exists():
        time.sleep(PAUSE_S)
        if not warehouse.exists():
            continue
        try:
            rows = query(warehouse, COUNT_SQL).rows()
        except Exception as err:  # every failure counts once the schema is there
            if ready:
                summary["failures"].append(f"{type(err).__name__}: {err}")
            continue
        ready = True
        summary["queries"] += 1
        ok = 0
        for step, status, *counts in rows:
            want = expected[str(step)] if status == "ok" else [0, 0, 0]
            ok += status == "ok"
            if counts != want:
                summary["partial"].append([step, status, *counts])
        summary["max_ok_seen"] = max(summary["max_ok_seen"], ok)
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))))
