"""The sweep's single warehouse writer: each result goes in as it arrives; duplicates and failures are counted.

No Ray here: the driver hands every `WorkResult` to `ResultWriter.write`, which a test can call directly
with results in any order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.errors import InputError
from dynamics.provenance import code_version
from dynamics.sources.checkpoints import WeightsIndex
from jobs.sweep.plan import WorkItem
from jobs.sweep.targets import ModelTarget
from jobs.sweep.worker import WorkResult
from warehouse import writes
from warehouse.db import connect_read

SYSTEMATIC_FAILURES = 3  # this many failures in a row with one message and no success: stop the sweep


@dataclass
class Summary:
    """What a sweep did, for the console and the exit status."""

    total: int = 0
    skipped: int = 0
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"checkpoints: {self.total} planned, {self.counts['ok']} scored, {self.skipped} skipped as already done, "
            f"{self.counts['duplicate']} duplicates, {self.counts['failed']} failed"
        ]
        lines += [f"  failed: {reason}" for reason in self.failures]
        return lines


def stored_weights(warehouse: Path, target: ModelTarget) -> WeightsIndex:
    """The weights of the model's checkpoints already scored with these settings (status 'ok')."""
    if not warehouse.exists():
        return WeightsIndex()
    with connect_read(warehouse) as con:
        rows = con.execute(
            "SELECT weights_sha256, min(step) FROM checkpoints WHERE model = ? AND settings_hash = ? "
            "AND status = 'ok' AND weights_sha256 IS NOT NULL GROUP BY 1",
            [target.model_id, target.settings_hash],
        ).fetchall()
    return WeightsIndex(dict(rows))


class ResultWriter:
    """Writes each result to the warehouse; keeps duplicates pointing at the lowest step with those weights."""

    def __init__(self, warehouse: Path, targets: list[ModelTarget], run_id: str, summary: Summary) -> None:
        self.warehouse = warehouse
        self.targets = {t.model_id: t for t in targets}
        self.run_id = run_id
        self.summary = summary
        self.weights = {t.model_id: stored_weights(warehouse, t) for t in targets}
        self.models_written: set[str] = set()
        self.prompts_written: set[str] = set()

    def checkpoint_row(self, item: WorkItem, extra: dict) -> dict:
        target = self.targets[item.model_id]
        return {
            "model": item.model_id, "step": item.step, "settings_hash": target.settings_hash,
            "tokens": target.tokens_seen(item.step), "settings": target.settings(),
            "code_version": code_version(), "run_id": self.run_id, **extra,
        }

    def write(self, result: WorkResult) -> None:
        item = result.item
        if result.status == "failed":
            writes.record_failure(self.warehouse, self.checkpoint_row(item, result.checkpoint), result.error)
            self.summary.failures.append(f"{item.model_id} {item.revision}: {result.error}")
        else:
            original = self.weights[item.model_id].original(result.checkpoint["weights_sha256"], item.step)
            if original is not None:
                self._write_duplicate(item, result.checkpoint, original)
                result.status = "duplicate"
            else:
                self._write_scores(result)
        self.summary.counts[result.status] += 1

    def _write_duplicate(self, item: WorkItem, checkpoint: dict, original: int) -> None:
        row = {k: v for k, v in checkpoint.items() if k != "duplicate_of"}
        writes.record_duplicate(self.warehouse, self.checkpoint_row(item, row), duplicate_of=original)

    def _write_scores(self, result: WorkResult) -> None:
        item, sha = result.item, result.checkpoint["weights_sha256"]
        target = self.targets[item.model_id]
        if item.model_id not in self.models_written and result.model_info:
            writes.upsert_model(self.warehouse, model=item.model_id, source=target.source, suite=target.suite,
                                seed=target.seed, **result.model_info)
            self.models_written.add(item.model_id)
        prompts = None if target.settings_hash in self.prompts_written else result.scored.prompts
        writes.write_checkpoint(
            self.warehouse, self.checkpoint_row(item, result.checkpoint), result.scored.head_scores,
            result.scored.head_task_scores, result.scored.checkpoint_metrics,
            prompts if prompts is not None and not prompts.is_empty() else None,
            ablations=result.scored.ablations if not result.scored.ablations.is_empty() else None,
        )
        self.prompts_written.add(target.settings_hash)
        later = self.weights[item.model_id].add(sha, item.step)
        if later is not None:  # an identical later step was scored first: demote it
            revision = target.revision_of(later)
            self._write_duplicate(WorkItem(item.model_id, revision, later), {"weights_sha256": sha, "revision": revision},
                                  item.step)
            self.summary.counts["ok"] -= 1
            self.summary.counts["duplicate"] += 1


def check_systematic_failure(summary: Summary) -> None:
    """Stop early when every checkpoint so far failed with the same error: a setting, not a checkpoint, is wrong."""
    if summary.counts["ok"] or summary.counts["duplicate"] or len(summary.failures) < SYSTEMATIC_FAILURES:
        return
    reasons = {failure.split(": ", 1)[1] for failure in summary.failures}
    if len(reasons) == 1:
        raise InputError(
            f"the first {len(summary.failures)} checkpoints all failed with: {reasons.pop()} "
            "(recorded as failed; fix the cause and rerun to retry them)"
        )
