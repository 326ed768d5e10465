"""The toy model suites: configs, presets, the cache, and training every model of a suite.

A suite is a family of small GPT-NeoX models trained on the same offline data, with checkpoints on a
Pythia-like schedule, laid out as `LocalSource` reads them. Two kinds of data: the 'organism' presets
(the default) train on repeated spans and then synthetic ICL episodes, and grow induction heads and then
function-vector heads (`dynamics.toy.episodes`); the 'stories' preset trains on repeated spans and
generated stories, and grows induction heads only (`dynamics.toy.corpus`).

    <suite_dir>/suite.json                      manifest (config, hash, data hash, scoring defaults, tasks,
                                                per-step scores)
    <suite_dir>/heldout.safetensors             held-out rows for the token-loss score ("tokens")
    <suite_dir>/<model>/tokenizer.json …        the suite's tokenizer (save_pretrained)
    <suite_dir>/<model>/step<N>/                config.json, model.safetensors, tokenizer files

The directory is keyed on a hash of the full config, so a second call with the same config reuses it.
`suite.json` is written last: a folder without it is an interrupted run and is rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import save_file

from dynamics.errors import ExistingOutputError, InputError, MissingInputError
from dynamics.home import dynamics_home
from dynamics.scorers.induction import InductionConfig
from dynamics.tasks.synthetic import BijectionTasks
from dynamics.toy.corpus import StoryData
from dynamics.toy.episodes import EpisodeData
from dynamics.toy.train import PreparedData, ProbeSettings, ToyModelSpec, TrainSettings, score_checkpoints, train_model

log = logging.getLogger(__name__)

MANIFEST = "suite.json"
HELDOUT = "heldout.safetensors"  # held-out rows under the key "tokens" (never trained on)
FORMAT_VERSION = 2  # bump when the layout or the training code changes what a config produces


def checkpoint_schedule(total: int, every: int, dense: tuple[int, int, int] | None = None) -> tuple[int, ...]:
    """Pythia-like steps: 0, 1, 2, 4, … below `every`, then every `every` up to `total`.

    `dense = (start, stop, step)` adds extra steps where the induction jump happens.
    """
    steps = {0, total} | {2**i for i in range(total.bit_length()) if 2**i < every}
    steps |= set(range(every, total + 1, every))
    if dense is not None:
        steps |= {s for s in range(*dense) if s <= total}
    return tuple(sorted(steps))


@dataclass(frozen=True)
class ToyScoring:
    """The sweep's scoring defaults for a suite (what the embedded default scores with, stored with every row).

    The reference's counts (100 FV prompts, 1000 probe sequences) except where the toy's short context
    forbids them: the shots, and the induction probe BOS + r + r, which must fit the context.
    """

    shots: int = 10
    fv_prompts: int = 100
    icl_queries: int = 100
    induction_sequences: int = 1000
    repeat_len: int = 50
    # the ablation grid in heads, not fractions: 1–20 % of a dozen heads is one head at every point
    ablation_heads: tuple[int, ...] = (1, 2, 3)
    exclude_heads: int = 1  # the other score's top heads kept out with exclusion (2 % of 12 heads is none)


@dataclass(frozen=True)
class ToySuiteConfig:
    """Everything that determines a suite's weights (and therefore its cache key), and how to score it."""

    models: tuple[ToyModelSpec, ...]
    train: TrainSettings
    data: StoryData | EpisodeData = field(default_factory=StoryData)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    scoring: ToyScoring = field(default_factory=ToyScoring)
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            problems.append(f"models must be non-empty with distinct names (got {names})")
        steps = self.train.steps
        if list(steps) != sorted(set(steps)) or not steps or steps[0] != 0:
            problems.append(f"train.steps must be sorted, distinct and start at 0 (got {steps[:5]}…)")
        context = self.data.context_length
        for repeat_len in {self.probe.induction.repeat_len, self.scoring.repeat_len}:
            if context < 2 * repeat_len + 1:
                problems.append(f"context_length {context} is shorter than the induction probe (1 + 2·{repeat_len} tokens)")
        if self.probe.late > context - 2:
            problems.append(f"probe.late {self.probe.late} must be ≤ context_length − 2")
        if problems:
            raise InputError(f"ToySuiteConfig has {len(problems)} problem(s): " + "; ".join(problems))

    @property
    def tasks(self) -> BijectionTasks | None:
        """The synthetic tasks the suite trains on and is scored with; None: the built-in tasks."""
        return self.data.tasks if isinstance(self.data, EpisodeData) else None

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "data_kind": type(self.data).__name__, **dataclasses.asdict(self)}

    def config_hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


PRESETS: dict[str, ToySuiteConfig] = {
    # The default, 2 CPU cores: two 3-layer width-64 models that differ only in head width (4 heads × 16 vs
    # 2 × 32), one process each. Repeated spans alone until step 1,000 grow induction heads (by steps
    # 400-1,100); then 80 % episodes of 8 synthetic tasks, with 30 % of demonstration labels random, grow
    # FV heads (by steps 1,300-2,800). Found by a search over data mixes, 3 seeds per model
    # (docs/methods.md, "The toy suites"). Checkpoints every 100 steps where the mechanisms appear.
    "default": ToySuiteConfig(
        models=(ToyModelSpec("toy-64d-4h", 64, 4, 3, rotary_fraction=0.5),
                ToyModelSpec("toy-64d-2h", 64, 2, 3, rotary_fraction=0.5)),
        train=TrainSettings(steps=checkpoint_schedule(5000, every=500, dense=(300, 3100, 100)), warmup_steps=100),
        data=EpisodeData(tasks=BijectionTasks(n_tasks=8), label_noise=0.3, switch_step=1000),
        probe=ProbeSettings(induction=InductionConfig(repeat_len=30, n_sequences=200), early=10, late=60),
        scoring=ToyScoring(shots=10, icl_queries=16, repeat_len=30),
    ),
    # The earlier default: induction heads from repeated spans and generated stories, no FV heads.
    "stories": ToySuiteConfig(
        models=(ToyModelSpec("toy-64d-2h", 64, 2, 2), ToyModelSpec("toy-64d-1h", 64, 1, 2)),
        train=TrainSettings(steps=checkpoint_schedule(4000, every=500, dense=(1200, 3000, 200))),
        data=StoryData(),
        scoring=ToyScoring(shots=4, icl_queries=50),
    ),
    # GPU (--device cuda): wider and deeper organisms, more tasks
    "medium": ToySuiteConfig(
        models=(
            ToyModelSpec("toy-128d-8h-4l", 128, 8, 4, rotary_fraction=0.5),
            ToyModelSpec("toy-128d-4h-4l", 128, 4, 4, rotary_fraction=0.5),
            ToyModelSpec("toy-128d-2h-4l", 128, 2, 4, rotary_fraction=0.5),
        ),
        train=TrainSettings(steps=checkpoint_schedule(8000, every=250, dense=(300, 3000, 100)), warmup_steps=100),
        data=EpisodeData(tasks=BijectionTasks(n_tasks=8, n_words=48, n_demo_inputs=24), n_fillers=96,
                         switch_step=1500, max_shots=12),
        probe=ProbeSettings(induction=InductionConfig(repeat_len=30, n_sequences=200), early=10, late=60),
        scoring=ToyScoring(shots=12, icl_queries=100, repeat_len=30),
    ),
}


def preset(name: str, *, seed: int | None = None, device: str | None = None) -> ToySuiteConfig:
    """A preset config, optionally with another seed or device (both change the cache key)."""
    if name not in PRESETS:
        raise InputError(f"unknown toy preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    if device is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    return config


def cache_root() -> Path:
    """`$DYNAMICS_HOME/toy`: where suites are cached by config hash."""
    return dynamics_home() / "toy"


def read_manifest(suite_dir: Path) -> dict:
    """The parsed `suite.json` of a finished suite."""
    path = Path(suite_dir) / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"no {MANIFEST} in {suite_dir}; it is not a finished toy suite (run `dynamics toy`)")
    return json.loads(path.read_text())


def heldout_file(suite_dir: Path) -> Path:
    """The suite's held-out token rows, (rows, context_length) under the key "tokens"."""
    return Path(suite_dir) / HELDOUT


def token_loss_positions(manifest: dict) -> tuple[int, int]:
    """(early, late) token positions the suite's token-loss score uses (the reference's 50/500 do not fit)."""
    probe = manifest["config"]["probe"]
    return probe["early"], probe["late"]


def ensure_suite(
    preset_name: str = "default", *, out: Path | None = None, seed: int | None = None,
    device: str | None = None, force: bool = False,
) -> Path:
    """The directory of a trained suite for a preset, training it only if the cache lacks it."""
    return train_suite(preset(preset_name, seed=seed, device=device), out=out, force=force)


def train_suite(config: ToySuiteConfig, out: Path | None = None, force: bool = False) -> Path:
    """Train every model of `config` (or reuse a finished suite with the same config) and return its dir.

    Args:
        out: the suite directory; default `cache_root() / config.config_hash()`.
        force: retrain even if `out` holds a finished suite (of this or another config).
    """
    suite_dir = Path(out) if out is not None else cache_root() / config.config_hash()
    suite_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(suite_dir) + ".lock"):  # concurrent callers wait for one trainer
        if _reusable(suite_dir, config, force):
            log.info("reusing toy suite in %s", suite_dir)
            return suite_dir
        _clear(suite_dir)
        _build(config, suite_dir)
    return suite_dir


def _reusable(suite_dir: Path, config: ToySuiteConfig, force: bool) -> bool:
    if not (suite_dir / MANIFEST).is_file():
        if suite_dir.is_dir() and any(suite_dir.iterdir()) and not (suite_dir / ".incomplete").exists():
            raise ExistingOutputError(f"{suite_dir} is not empty and holds no toy suite; choose an empty or new --out folder")
        return False
    found = read_manifest(suite_dir).get("config_hash")
    if force:
        return False
    if found != config.config_hash():
        raise ExistingOutputError(
            f"{suite_dir} holds a toy suite of another config (hash {found}, wanted {config.config_hash()}); "
            "pass --force to overwrite it or choose another --out folder"
        )
    return True


def _clear(suite_dir: Path) -> None:
    if suite_dir.exists():
        shutil.rmtree(suite_dir)
    suite_dir.mkdir(parents=True)
    (suite_dir / ".incomplete").touch()


def _build(config: ToySuiteConfig, suite_dir: Path) -> None:
    start = time.perf_counter()
    tokenizer, prepared = config.data.prepare(config.seed)
    save_file({"tokens": prepared.heldout}, heldout_file(suite_dir))
    for spec in config.models:
        tokenizer.save_pretrained(suite_dir / spec.name)
    jobs = [(spec, config, prepared, suite_dir / spec.name, i) for i, spec in enumerate(config.models)]
    scores = _run_jobs(jobs, config.train.device)
    for spec in config.models:
        for step in config.train.steps:
            tokenizer.save_pretrained(suite_dir / spec.name / f"step{step}")
    manifest = {
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "models": [spec.name for spec in config.models],
        "steps": list(config.train.steps),
        "seed": config.seed,
        "data_sha256": prepared.fingerprint,
        "scoring": dataclasses.asdict(config.scoring),
        "tasks": None if config.tasks is None else dataclasses.asdict(config.tasks),
        "elapsed_s": round(time.perf_counter() - start, 1),
        "checkpoint_scores": dict(zip([spec.name for spec in config.models], scores)),
    }
    (suite_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    (suite_dir / ".incomplete").unlink()


def _run_jobs(jobs: list[tuple], device: str) -> list[list[dict]]:
    """Train and score each model; on CPU one process per model, as many at once as there are cores.

    CPU training always runs with one torch thread: the thread count changes the order of float
    reductions, so fixing it makes the weights depend on the seed alone, not on the machine's cores.
    """
    if device != "cpu":
        return [_train_and_score(*job) for job in jobs]
    if len(jobs) == 1:
        with _torch_threads(1):
            return [_train_and_score(*jobs[0])]
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    with context.Pool(min(len(jobs), os.cpu_count() or 1), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return pool.starmap(_train_and_score, jobs)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train_and_score(spec: ToyModelSpec, config: ToySuiteConfig, prepared: PreparedData, model_dir: Path,
                     position: int) -> list[dict]:
    seed = config.seed * 1000 + position  # models differ in initialisation and data order
    batches = config.data.batches(prepared, seed)
    train_model(spec, config.train, seed, batches, prepared.vocab_size, config.data.context_length, model_dir, position)
    return score_checkpoints(model_dir, config.train.steps, prepared.ordinary_ids, prepared.heldout, config.probe,
                             config.train.device)
