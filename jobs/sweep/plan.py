"""The sweep's work list: one work item per checkpoint, minus those the warehouse already has."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.sweep.targets import ModelTarget


@dataclass(frozen=True)
class WorkItem:
    model_id: str
    revision: str
    step: int


def work_items(target: ModelTarget) -> list[WorkItem]:
    return [WorkItem(target.model_id, revision, step) for revision, step in zip(target.revisions, target.steps)]


def plan_work(targets: list[ModelTarget], warehouse: Path, force: bool) -> tuple[list[WorkItem], int]:
    """(items to score, number planned but already done); with `force`, nothing counts as done."""
    from warehouse import writes

    todo, skipped = [], 0
    for target in targets:
        done = set() if force else writes.completed_checkpoints(warehouse, target.model_id, target.settings_hash)
        for item in work_items(target):
            if item.step in done:
                skipped += 1
            else:
                todo.append(item)
    return todo, skipped
