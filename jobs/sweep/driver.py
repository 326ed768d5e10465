"""The Ray side of the sweep: start actors, hand out work items, write each result as it arrives.

The driver is the warehouse's only writer (`jobs.sweep.writer`): each checkpoint's rows go in one short
transaction as soon as its actor returns them, so a kill at any moment loses at most the checkpoints in
flight, and a rerun (which skips completed checkpoints) finishes the rest. An actor that dies is
restarted by Ray and its checkpoint retried; a checkpoint that raises is recorded as failed and the
sweep goes on.

Ray is imported when a sweep starts, not when this module is: a local Ray must see its environment
(`LOCAL_ONLY_ENV`) before `import ray` reads it. A local Ray is shut down when the sweep ends, and a
watchdog (`jobs.sweep.watchdog`) kills what is left of it if the driver dies without doing so (kill -9).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from dynamics.errors import InputError
from jobs.sweep.config import SweepConfig
from jobs.sweep.plan import WorkItem
from jobs.sweep.targets import ModelTarget
from jobs.sweep.watchdog import SESSION_ENV
from jobs.sweep.worker import ScoringWorker, WorkResult
from jobs.sweep.writer import ResultWriter, Summary, check_systematic_failure

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
ACTOR_RESTART_TIMEOUT_S = 300.0
# '0': multi-node clusters off, as on macOS: a local Ray's node address and every listener are 127.0.0.1.
# On Linux Ray otherwise turns _node_ip_address="127.0.0.1" into the machine's reachable address.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def running_ray(address: str | None):
    """Ray for the length of the block: the cluster at `address` (or $RAY_ADDRESS, as `ray job submit` sets),
    else a local Ray, shut down on the way out (an error and Ctrl-C included) and watched by a watchdog.

    Yields the `ray` module.
    """
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    if not joining:
        if "ray" in sys.modules and os.environ.get(LOCAL_ONLY_ENV) != "0":
            log.warning("Ray was imported before the sweep could set %s=0; this local Ray may listen beyond "
                        "loopback", LOCAL_ONLY_ENV)
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")  # read by `import ray` here and by the processes Ray starts
    import ray

    if ray.is_initialized():  # started by the caller (a notebook, a test): theirs to stop
        yield ray
        return
    sigterm = signal.getsignal(signal.SIGTERM)
    watchdog = None
    try:
        if joining:
            ray.init(address=address or "auto", log_to_driver=False)
        else:
            watchdog = start_watchdog()  # before ray.init: every process Ray starts inherits its session marker
            ray.init(
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}},
            )
        # ray.init replaces the SIGTERM handler with one whose exit dumps a C++ stack; keep the caller's (the
        # command line's: SIGTERM ends the sweep like Ctrl-C)
        if threading.current_thread() is threading.main_thread() and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if watchdog is not None:
            watchdog.stdin.close()  # the watchdog kills whatever of this Ray is left, and exits
            watchdog.wait()
            os.environ.pop(SESSION_ENV, None)  # what this process starts later is not this Ray's


def start_watchdog() -> subprocess.Popen:
    """Start `jobs.sweep.watchdog` for a new session marker, which this process's children will inherit."""
    session = uuid.uuid4().hex
    os.environ[SESSION_ENV] = session
    script = Path(__file__).with_name("watchdog.py")
    return subprocess.Popen([sys.executable, str(script), session], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ""})


def start_actors(ray, targets: list[ModelTarget], config: SweepConfig, n_items: int) -> list:
    """One actor per GPU (num_gpus=1), or CPU actors with one torch thread each."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = config.device == "cuda" or (config.device == "auto" and gpus > 0)
    if config.device == "cuda" and gpus == 0:
        raise InputError("--device cuda but the Ray cluster has no GPUs; use --device cpu or a GPU cluster")
    if use_gpu:
        count, options, device = config.actors or gpus, {"num_gpus": 1}, "cuda"
    else:
        count, options, device = config.actors or max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}, "cpu"
    count = max(1, min(count, n_items))
    actor_class = ray.remote(ScoringWorker).options(max_restarts=-1, max_task_retries=0, **options)
    actors = [actor_class.remote(targets, device, torch_threads=None if use_gpu else 1) for _ in range(count)]
    ray.get([actor.ready.remote() for actor in actors])
    return actors


def _actor_deaths(ray) -> tuple[type[Exception], ...]:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return ActorDiedError, ActorUnavailableError, RayActorError


def wait_for_restart(ray, actor, timeout_s: float = ACTOR_RESTART_TIMEOUT_S) -> None:
    """Block until a restarted actor answers again (or `timeout_s` passes).

    Actors run with max_task_retries=0, so work sent while Ray is still restarting one fails at once:
    resubmitting straight away would burn a checkpoint's retries within a second of one crash.
    """
    from ray.exceptions import GetTimeoutError

    deadline = time.monotonic() + timeout_s
    while (remaining_s := deadline - time.monotonic()) > 0:
        try:
            ray.get(actor.ready.remote(), timeout=remaining_s)
            return
        except _actor_deaths(ray):
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        except GetTimeoutError:
            return


def sweep(todo: list[WorkItem], targets: list[ModelTarget], warehouse: Path, run_id: str, config: SweepConfig,
          summary: Summary) -> None:
    """Score `todo` on Ray actors and write every result as it arrives."""
    with running_ray(config.address) as ray:
        _sweep(ray, todo, targets, warehouse, run_id, config, summary)


def _sweep(ray, todo: list[WorkItem], targets: list[ModelTarget], warehouse: Path, run_id: str, config: SweepConfig,
           summary: Summary) -> None:
    writer = ResultWriter(warehouse, targets, run_id, summary)
    actors = start_actors(ray, targets, config, len(todo))
    deaths = _actor_deaths(ray)
    pending = deque(todo)
    reserved: dict[int, WorkItem | None] = {}  # actor index -> item it will get next (read ahead meanwhile)
    attempts: dict[WorkItem, int] = {}
    in_flight: dict = {}  # ObjectRef -> (actor index, item)

    def submit(index: int) -> None:
        item = reserved.pop(index, None) or (pending.popleft() if pending else None)
        if item is None:
            return
        reserved[index] = pending.popleft() if pending else None
        known = writer.weights[item.model_id].as_dict()
        in_flight[actors[index].score.remote(item, reserved[index], known)] = (index, item)

    with tqdm(total=len(todo), desc="checkpoints", unit="ckpt", dynamic_ncols=True) as progress:
        for index in range(len(actors)):
            submit(index)
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            index, item = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except deaths as err:
                attempts[item] = attempts.get(item, 0) + 1
                if attempts[item] <= config.max_retries:
                    log.warning("actor died scoring %s %s; retrying (%d/%d)", item.model_id, item.revision,
                                attempts[item], config.max_retries)
                    pending.appendleft(item)
                    wait_for_restart(ray, actors[index])
                    submit(index)
                    continue
                result = WorkResult(item, "failed", {"revision": item.revision},
                                    error=f"scoring actor died {attempts[item]} times: {type(err).__name__}")
            writer.write(result)
            check_systematic_failure(summary)
            progress.update(1)
            progress.set_postfix(failed=summary.counts["failed"], duplicates=summary.counts["duplicate"])
            submit(index)
