"""What a sweep scores: model targets (where their checkpoints come from, how to score them) and work items.

Everything here is plain, picklable data built by the driver and shipped to the scoring actors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from dynamics.checkpoints import HubSource, LocalSource
from dynamics.heldout import load_heldout_tokens
from dynamics.icl_eval import evaluation_tasks
from dynamics.provenance import settings_hash
from dynamics.scorers.function_vectors import choose_dtype
from dynamics.scoring import CheckpointScorer, ScoringConfig, tasks_fingerprint
from dynamics.tasks import builtin_tasks, load_task_dir


@dataclass(frozen=True)
class WorkItem:
    model_id: str
    revision: str
    step: int


@dataclass(frozen=True)
class ModelTarget:
    """One model of a sweep: its checkpoints' source and how every checkpoint is scored."""

    model_id: str  # warehouse name: a Hub repo id, or 'toy/<name>' for the toy suite
    source: str  # 'hub' or 'local'
    location: str  # repo id, or the folder holding step<N>/ checkpoints
    revisions: tuple[str, ...]
    steps: tuple[int, ...]
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tasks_dir: str | None = None  # Todd-format task folder; None = the built-in tasks
    task_names: tuple[str, ...] | None = None
    heldout_path: str | None = None  # held-out text for the ICL token-loss score (dynamics.heldout)
    cache_dir: str | None = None
    max_cache_bytes: int | None = None
    tasks_hash: str = ""  # fingerprints filled in by `with_fingerprints`
    heldout_hash: str = ""
    tokens_per_step: int | None = None  # training tokens per optimizer step, when known
    ablation_steps: tuple[int, ...] = ()  # checkpoints that also get the ablation grid and FV execution

    def tokens_seen(self, step: int) -> int | None:
        return None if self.tokens_per_step is None else step * self.tokens_per_step

    def revision_of(self, step: int) -> str:
        return dict(zip(self.steps, self.revisions))[step]

    def settings(self) -> dict:
        """Everything that changes a score; its hash keys the checkpoint's rows (resume compares it)."""
        return {
            **self.scoring.settings(),
            "tasks": {"source": self.tasks_dir or "builtin", "names": self.task_names, "sha": self.tasks_hash},
            "heldout": {"file": Path(self.heldout_path).name, "sha": self.heldout_hash} if self.heldout_path else None,
            "ablation_steps": list(self.ablation_steps),
        }

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings())

    def dtype_for(self, step: int, device: str) -> torch.dtype:
        return choose_dtype(step, device)

    def tasks(self) -> dict:
        tasks = load_task_dir(Path(self.tasks_dir), self.task_names) if self.tasks_dir else builtin_tasks()
        if self.task_names and not self.tasks_dir:
            tasks = {name: tasks[name] for name in self.task_names}
        return tasks

    def evaluation_tasks(self) -> dict:
        """Few-shot accuracy and ablation tasks: the reference's evaluation list for a Todd folder."""
        return evaluation_tasks(self.tasks_dir) if self.tasks_dir else self.tasks()

    def build_scorer(self, tokenizer_dir: Path, n_ctx: int) -> CheckpointScorer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
        heldout = None
        if self.heldout_path:
            heldout = load_heldout_tokens(Path(self.heldout_path), tokenizer, self.scoring.token_loss.late + 2)
        evaluation = self.evaluation_tasks() if self.scoring.icl is not None else None
        return CheckpointScorer(tokenizer, self.tasks(), self.scoring, heldout, evaluation_tasks=evaluation, n_ctx=n_ctx)


def with_fingerprints(target: ModelTarget) -> ModelTarget:
    """The target with the hashes of its tasks and held-out text filled in (reads those files once)."""
    heldout_hash = ""
    if target.heldout_path:
        heldout_hash = hashlib.sha256(Path(target.heldout_path).read_bytes()).hexdigest()[:16]
    return replace(target, tasks_hash=tasks_fingerprint(target.tasks()), heldout_hash=heldout_hash)


def open_source(target: ModelTarget):
    if target.source == "hub":
        return HubSource(target.location, cache_dir=target.cache_dir, max_cache_bytes=target.max_cache_bytes)
    return LocalSource(Path(target.location))


def work_items(target: ModelTarget) -> list[WorkItem]:
    return [WorkItem(target.model_id, revision, step) for revision, step in zip(target.revisions, target.steps)]
