"""The sweep's work list: one work item per checkpoint, minus those the warehouse already has.

A checkpoint counts as done when the warehouse holds it with the same settings and, for a local run, the
same weights: a run retrained in place is rescored, not skipped. A local run's id (`local/<folder name>`
by default) that the warehouse already holds for another folder is refused before anything is written,
so two runs never share an id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dynamics.errors import InputError, UserError
from dynamics.sources.checkpoints import LocalSource
from jobs.sweep.targets import ModelTarget


@dataclass(frozen=True)
class WorkItem:
    model_id: str
    revision: str
    step: int


@dataclass
class Plan:
    """What a sweep will score, and what it found already done."""

    todo: list[WorkItem] = field(default_factory=list)
    skipped: int = 0  # planned but already done with these settings (and these weights)
    changed: list[WorkItem] = field(default_factory=list)  # done before, but their weight files changed since: in todo


def work_items(target: ModelTarget) -> list[WorkItem]:
    return [WorkItem(target.model_id, revision, step) for revision, step in zip(target.revisions, target.steps)]


def plan_work(targets: list[ModelTarget], warehouse: Path, force: bool) -> Plan:
    """The items to score; with `force`, nothing counts as done."""
    from warehouse.queries import scored_weights

    plan = Plan()
    for target in targets:
        done = {} if force else scored_weights(warehouse, target.model_id, target.settings_hash)
        current = _current_weights(target, {step for step, sha in done.items() if sha is not None})
        for item in work_items(target):
            if item.step not in done:
                plan.todo.append(item)
            elif item.step in current and current[item.step] != done[item.step]:
                plan.todo.append(item)
                plan.changed.append(item)
            else:
                plan.skipped += 1
    return plan


def _current_weights(target: ModelTarget, steps: set[int]) -> dict[int, str | None]:
    """step → sha256 of a local run's weight files now (None when unreadable: the sweep records why); remembered
    by size and mtime beside the run (`dynamics.sources.weight_files`), so the actors do not hash them again."""
    if target.source != "local" or not steps:
        return {}
    source = LocalSource(Path(target.location), skip_unparsed=True)
    current = {}
    for step in steps & set(target.steps):
        try:
            current[step] = source.fetch(target.revision_of(step)).weights_sha256
        except UserError:  # missing or corrupt files: rescored, and recorded as failed with the reason
            current[step] = None
    return current


def check_local_ids(targets: list[ModelTarget], warehouse: Path, named: tuple[str, ...]) -> None:
    """Refuse a --local run whose default id the warehouse's runs recorded for another folder (`named`: the
    ids given with --name, which the user vouches for, e.g. a run moved to a new disk)."""
    from warehouse.queries import local_run_folders

    stored = local_run_folders(warehouse)
    clashes = [(target, stored[target.model_id]) for target in targets
               if target.source == "local" and target.model_id.startswith("local/") and target.model_id not in named
               and stored.get(target.model_id, target.location) != target.location]
    if clashes:
        target, folder = clashes[0]
        name = target.model_id.removeprefix("local/")
        raise InputError(f"{target.model_id} in {warehouse} holds the checkpoints of {folder}, not {target.location}; "
                         f"give this run another id with --name (one per --local, in order), or pass --name {name} "
                         f"if it is that run moved" + (f" ({len(clashes) - 1} more like it)" if len(clashes) > 1 else ""))
