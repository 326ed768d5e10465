"""The Ray side of the sweep: start actors, hand out work items, write each result as it arrives.

The driver is the warehouse's only writer: each checkpoint's rows go in one short transaction as soon
as its actor returns them, so a kill at any moment loses at most the checkpoints in flight, and a
rerun (which skips completed checkpoints) finishes the rest. An actor that dies is restarted by Ray
and its checkpoint retried; a checkpoint that raises is recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import deque
from pathlib import Path

import ray
from ray._private import ray_constants
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError
from tqdm import tqdm

from jobs.sweep_plan import ModelTarget, WorkItem
from jobs.sweep_worker import ScoringWorker, WorkResult
from warehouse import writes
from warehouse.db import connect_read

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
ACTOR_DEATHS = (ActorDiedError, ActorUnavailableError, RayActorError)
ACTOR_RESTART_TIMEOUT_S = 300.0
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # '0': a local Ray listens on loopback only
SYSTEMATIC_FAILURES = 3  # this many failures in a row with one message and no success: stop the sweep


def start_ray(address: str | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS, as `ray job submit` sets), else start a local Ray."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or "auto", log_to_driver=False)
        return
    # A local Ray: loopback only, no dashboard, workers import this checkout. On Linux Ray turns
    # _node_ip_address="127.0.0.1" into the machine's reachable address and binds there or on every
    # interface, unless multi-node clusters are off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as on macOS):
    # then the node address and every listener are 127.0.0.1. Ray reads the variable at import, so this
    # process's copy is set too; the processes Ray starts inherit the environment.
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(LOCAL_ONLY_ENV, True)
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}},
    )


def start_actors(targets: list[ModelTarget], args: argparse.Namespace, n_items: int) -> list:
    """One actor per GPU (num_gpus=1), or CPU actors with one torch thread each."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = args.device == "cuda" or (args.device == "auto" and gpus > 0)
    if args.device == "cuda" and gpus == 0:
        raise ValueError("--device cuda but the Ray cluster has no GPUs; use --device cpu or a GPU cluster")
    if use_gpu:
        count, options, device = args.actors or gpus, {"num_gpus": 1}, "cuda"
    else:
        count, options, device = args.actors or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}, "cpu"
    count = max(1, min(count, n_items))
    actor_class = ray.remote(ScoringWorker).options(max_restarts=-1, max_task_retries=0, **options)
    actors = [actor_class.remote(targets, device, torch_threads=None if use_gpu else 1) for _ in range(count)]
    ray.get([actor.ready.remote() for actor in actors])
    return actors


def wait_for_restart(actor, timeout_s: float = ACTOR_RESTART_TIMEOUT_S) -> None:
    """Block until a restarted actor answers again (or `timeout_s` passes).

    Actors run with max_task_retries=0, so work sent while Ray is still restarting one fails at once:
    resubmitting straight away would burn a checkpoint's retries within a second of one crash.
    """
    deadline = time.monotonic() + timeout_s
    while (remaining_s := deadline - time.monotonic()) > 0:
        try:
            ray.get(actor.ready.remote(), timeout=remaining_s)
            return
        except ACTOR_DEATHS:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        except GetTimeoutError:
            return


def known_hashes(warehouse: Path, target: ModelTarget) -> dict[str, int]:
    """weights_sha256 -> lowest scored step of the model with these settings (for duplicate detection)."""
    if not warehouse.exists():
        return {}
    with connect_read(warehouse) as con:
        rows = con.execute(
            "SELECT weights_sha256, min(step) FROM checkpoints WHERE model = ? AND settings_hash = ? "
            "AND status = 'ok' AND weights_sha256 IS NOT NULL GROUP BY 1",
            [target.model_id, target.settings_hash],
        ).fetchall()
    return dict(rows)


class ResultWriter:
    """Writes each result to the warehouse; keeps duplicates pointing at the lowest step with those weights."""

    def __init__(self, warehouse: Path, targets: dict[str, ModelTarget], run_id: str, summary) -> None:
        self.warehouse = warehouse
        self.targets = targets
        self.run_id = run_id
        self.summary = summary
        self.hashes = {model: known_hashes(warehouse, t) for model, t in targets.items()}
        self.models_written: set[str] = set()
        self.prompts_written: set[str] = set()

    def checkpoint_row(self, item: WorkItem, extra: dict) -> dict:
        from dynamics.provenance import code_version

        target = self.targets[item.model_id]
        return {
            "model": item.model_id, "step": item.step, "settings_hash": target.settings_hash,
            "tokens": target.tokens_seen(item.step), "settings": target.settings(),
            "code_version": code_version(), "run_id": self.run_id, **extra,
        }

    def write(self, result: WorkResult) -> None:
        item, hashes = result.item, self.hashes[result.item.model_id]
        if result.status == "failed":
            writes.record_failure(self.warehouse, self.checkpoint_row(item, result.checkpoint), result.error)
            self.summary.failures.append(f"{item.model_id} {item.revision}: {result.error}")
        elif result.status == "duplicate" or hashes.get(result.checkpoint["weights_sha256"], item.step) < item.step:
            original = hashes[result.checkpoint["weights_sha256"]]
            row = {k: v for k, v in result.checkpoint.items() if k != "duplicate_of"}
            writes.record_duplicate(self.warehouse, self.checkpoint_row(item, row), duplicate_of=original)
            result.status = "duplicate"
        else:
            self._write_scores(result)
        self.summary.counts[result.status] += 1

    def _write_scores(self, result: WorkResult) -> None:
        item, sha = result.item, result.checkpoint["weights_sha256"]
        target = self.targets[item.model_id]
        if item.model_id not in self.models_written and result.model_info:
            writes.upsert_model(self.warehouse, model=item.model_id, source=target.source, **result.model_info)
            self.models_written.add(item.model_id)
        prompts = None if target.settings_hash in self.prompts_written else result.scored.prompts
        writes.write_checkpoint(
            self.warehouse, self.checkpoint_row(item, result.checkpoint), result.scored.head_scores,
            result.scored.head_task_scores, result.scored.checkpoint_metrics,
            prompts if prompts is not None and not prompts.is_empty() else None,
            ablations=result.scored.ablations if not result.scored.ablations.is_empty() else None,
        )
        self.prompts_written.add(target.settings_hash)
        later = self.hashes[item.model_id].get(sha)
        self.hashes[item.model_id][sha] = min(item.step, later if later is not None else item.step)
        if later is not None and later > item.step:  # an identical later step was scored first: demote it
            row = self.checkpoint_row(WorkItem(item.model_id, target.revision_of(later), later),
                                      {"weights_sha256": sha, "revision": target.revision_of(later)})
            writes.record_duplicate(self.warehouse, row, duplicate_of=item.step)
            self.summary.counts["ok"] -= 1
            self.summary.counts["duplicate"] += 1


def sweep(todo: list[WorkItem], targets: list[ModelTarget], warehouse: Path, run_id: str, args, summary) -> None:
    """Score `todo` on Ray actors and write every result as it arrives."""
    start_ray(args.address)
    by_model = {t.model_id: t for t in targets}
    writer = ResultWriter(warehouse, by_model, run_id, summary)
    actors = start_actors(targets, args, len(todo))
    pending = deque(todo)
    reserved: dict[int, WorkItem | None] = {}  # actor index -> item it will get next (prefetched meanwhile)
    attempts: dict[WorkItem, int] = {}
    in_flight: dict = {}  # ObjectRef -> (actor index, item)

    def submit(index: int) -> None:
        item = reserved.pop(index, None) or (pending.popleft() if pending else None)
        if item is None:
            return
        reserved[index] = pending.popleft() if pending else None
        hashes = writer.hashes[item.model_id]
        ref = actors[index].score.remote(item, reserved[index], dict(hashes))
        in_flight[ref] = (index, item)

    with tqdm(total=len(todo), desc="checkpoints", unit="ckpt", dynamic_ncols=True) as progress:
        for index in range(len(actors)):
            submit(index)
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            index, item = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except ACTOR_DEATHS as err:
                attempts[item] = attempts.get(item, 0) + 1
                if attempts[item] <= args.max_retries:
                    log.warning("actor died scoring %s %s; retrying (%d/%d)", item.model_id, item.revision,
                                attempts[item], args.max_retries)
                    pending.appendleft(item)
                    wait_for_restart(actors[index])
                    submit(index)
                    continue
                result = WorkResult(item, "failed", {"revision": item.revision},
                                    error=f"scoring actor died {attempts[item]} times: {type(err).__name__}")
            writer.write(result)
            check_systematic_failure(summary)
            progress.update(1)
            progress.set_postfix(failed=summary.counts["failed"], duplicates=summary.counts["duplicate"])
            submit(index)


def check_systematic_failure(summary) -> None:
    """Stop early when every checkpoint so far failed with the same error: a setting, not a checkpoint, is wrong."""
    if summary.counts["ok"] or summary.counts["duplicate"] or len(summary.failures) < SYSTEMATIC_FAILURES:
        return
    reasons = {failure.split(": ", 1)[1] for failure in summary.failures}
    if len(reasons) == 1:
        raise ValueError(
            f"the first {len(summary.failures)} checkpoints all failed with: {reasons.pop()} "
            "(recorded as failed; fix the cause and rerun to retry them)"
        )
