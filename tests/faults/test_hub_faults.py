"""Broken Hub checkpoints in a real huggingface_hub cache (HF_HUB_OFFLINE=1): each is recorded with a
clear status and reason while the sweep scores the rest."""

from __future__ import annotations

import duckdb

from tests.faults.conftest import FAST_SCORING, record_figures, run_faulted_sweep
from tests.hub_cache import build_hub_cache, repo_folder

REPO_ID = "EleutherAI/pythia-14m"  # a catalogue name; its branches here hold the toy run's checkpoints


def test_corrupt_truncated_missing_and_identical_revisions(fault_run_template, tmp_path):
    cache = tmp_path / "hub"
    steps = {"step0": 0, "step1": 1, "step2": 2, "step4": 4, "step16": 16}  # step1 holds step0's weights
    build_hub_cache(cache, REPO_ID, {branch: fault_run_template / branch for branch in steps})
    blobs = repo_folder(cache, REPO_ID) / "snapshots"
    corrupted = (blobs / _commit(cache, "step2") / "model.safetensors").resolve()
    data = bytearray(corrupted.read_bytes())
    data[-64:] = bytes(64)  # flipped tensor bytes: the header still parses and the size is right
    corrupted.write_bytes(bytes(data))
    truncated = (blobs / _commit(cache, "step4") / "model.safetensors").resolve()
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # a download cut short

    warehouse = tmp_path / "hub.duckdb"
    result = run_faulted_sweep(["--model", REPO_ID, "--steps", "0,1,2,4,8,16", "--cache-dir", cache, "--warehouse", warehouse,
                        *FAST_SCORING, "--no-report", "--actors", "1"], tmp_path, HF_HUB_OFFLINE="1")

    record_figures("hub: corrupt/truncated/missing/identical", 4, int(result.returncode == 1 and warehouse.exists()),
                   rows_lost=sum(max(0, 40 - n) for n in _scored(warehouse, (0, 16)).values()),
                   wrong_rows=sum(_scored(warehouse, (1, 2, 4, 8)).values()))
    assert result.returncode == 1, result.stderr[-3000:]  # some checkpoints failed; they are recorded
    assert "6 planned, 2 scored, 0 skipped as already done, 1 duplicates, 3 failed" in result.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = {step: (status, duplicate_of, error) for step, status, duplicate_of, error in con.execute(
            "SELECT step, status, duplicate_of, error FROM checkpoints").fetchall()}
        scored = dict(con.execute("SELECT step, count(*) FROM head_scores GROUP BY step").fetchall())
    assert {step: row[0] for step, row in rows.items()} == {
        0: "ok", 1: "duplicate", 2: "failed", 4: "failed", 8: "failed", 16: "ok"}
    assert rows[1][1] == 0
    assert "corrupt or truncated" in rows[2][2] and corrupted.name in rows[2][2] and "sha256" in rows[2][2]
    assert "corrupt or truncated" in rows[4][2] and truncated.name in rows[4][2]
    assert "step8" in rows[8][2] and "not in the cache" in rows[8][2] and "HF_HUB_OFFLINE=1" in rows[8][2]
    assert all("\n" not in row[2] for row in rows.values() if row[2])  # one-line reasons
    assert scored == {0: 40, 16: 40}  # 5 metrics × 2 layers × 4 heads; failed ones have no rows at all


def _commit(cache, branch: str) -> str:
    return (repo_folder(cache, REPO_ID) / "refs" / branch).read_text()


def _scored(warehouse, steps) -> dict[int, int]:
    """step -> its head_scores rows, for `steps`."""
    if not warehouse.exists():
        return {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT step, count(*) FROM head_scores GROUP BY step").fetchall()
    return {step: n for step, n in rows if step in steps}
