"""Score one loaded checkpoint: every head's induction-family and FV scores plus model-level metrics.

`CheckpointScorer` holds what stays fixed across a model's checkpoints — the induction probe, the FV
prompt set and the held-out text — built once from the tokenizer and reused for every revision.
Its `score` returns warehouse-ready Polars frames. The sweep's actors call it for every checkpoint;
a notebook calls `dynamics.notebook.score_model`, which wraps it for a model in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import polars as pl
from torch import Tensor

from dynamics.adapters import LoadedModel
from dynamics.errors import InputError
from dynamics.experiments.ablations import HeldoutTokens
from dynamics.experiments.runner import IclExperimentConfig, build_icl_inputs, run_icl_experiments
from dynamics.provenance import Provenance
from dynamics.rows import checkpoint_metric_rows, head_score_rows, head_task_score_rows
from dynamics.scorers.estimates import HeadScores
from dynamics.scorers.function_vectors import (
    FunctionVectorConfig,
    build_function_vector_prompts,
    score_function_vector_heads,
)
from dynamics.scorers.induction import InductionConfig, make_probe, ordinary_token_ids, score_induction
from dynamics.scorers.token_loss import token_loss_score
from dynamics.tasks.base import IclTask
from dynamics.tasks.prompts import PromptSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenLossConfig:
    """Positions of the ICL token-loss score (docs/methods.md, "ICL token-loss score"); the reference uses 50 and 500."""

    early: int = 50
    late: int = 500

    def __post_init__(self) -> None:
        if not 0 <= self.early < self.late:
            raise InputError(f"token-loss positions need 0 ≤ early < late (got early={self.early}, late={self.late})")


@dataclass(frozen=True)
class ScoringConfig:
    """What to score per checkpoint. `function_vectors=None` skips the FV score, `icl=None` the ICL
    experiments (few-shot accuracy at every checkpoint; ablations and FV execution where asked)."""

    induction: InductionConfig = field(default_factory=InductionConfig)
    function_vectors: FunctionVectorConfig | None = field(default_factory=FunctionVectorConfig)
    token_loss: TokenLossConfig = field(default_factory=TokenLossConfig)
    icl: IclExperimentConfig | None = field(default_factory=IclExperimentConfig)

    def __post_init__(self) -> None:
        if self.icl is not None and (self.icl.means_from == "fv_prompts") != (self.function_vectors is not None):
            raise InputError("icl.means_from must be 'fv_prompts' exactly when FV heads are scored "
                             "(else 'evaluation_prompts')")

    def settings(self) -> dict:
        """Everything that changes a score (batch sizes excluded: scores do not depend on them)."""
        return {
            "induction": self.induction.settings(),
            "function_vectors": None if self.function_vectors is None else self.function_vectors.settings(),
            "token_loss": asdict(self.token_loss),
            "icl": None if self.icl is None else self.icl.settings(),
        }


def scoring_settings(config: ScoringConfig, tasks: Mapping[str, IclTask] | None = None, *, tasks_source: str,
                     tasks_sha: str | None = None, templates: tuple[dict, ...] | None = None,
                     task_names: tuple[str, ...] | None = None, heldout: dict | None = None,
                     ablation_steps: tuple[int, ...] = ()) -> dict:
    """Everything that changes a stored score; its hash keys the rows (docs/methods.md, "Settings hash").

    Args:
        tasks, tasks_sha, templates: the tasks scored, or their `tasks_fingerprint` and `task_templates` when
            already known.
        tasks_source: the task folder, or 'builtin' / 'in-memory'.
        heldout: what identifies the held-out rows of the token-loss score (None: not scored).
        ablation_steps: the checkpoints that also get the ablation grid.
    """
    sha = tasks_sha if tasks_sha is not None else tasks_fingerprint(tasks)
    templates = templates if templates is not None else task_templates(tasks)
    return {
        **config.settings(),
        "tasks": {"source": tasks_source, "names": task_names, "sha": sha, "templates": list(templates)},
        "heldout": heldout,
        "ablation_steps": list(ablation_steps),
    }


def task_templates(tasks: Mapping[str, IclTask]) -> tuple[dict, ...]:
    """The distinct prompt templates of a task set, as dicts (a task set usually has one)."""
    distinct = {json.dumps(asdict(task.template), sort_keys=True) for task in tasks.values()}
    return tuple(json.loads(text) for text in sorted(distinct))


def tasks_fingerprint(tasks: Mapping[str, IclTask]) -> str:
    """Hash of the tasks' names, pools and templates, so changed task files give a new settings hash."""
    content = {name: [task.train, task.valid, asdict(task.template)] for name, task in sorted(tasks.items())}
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def prompt_rows(prompt_set: PromptSet) -> pl.DataFrame:
    """Warehouse `prompts` rows; `prompt` holds the full record, so `PromptSet.from_records` rebuilds the set."""
    records = prompt_set.to_records()
    return pl.DataFrame(
        {
            "task": [r["task"] for r in records],
            "kind": [r["kind"] for r in records],
            "idx": [r["index"] for r in records],
            "prompt": [json.dumps(r, ensure_ascii=False) for r in records],
            "target": [r["target"] for r in records],
        },
        schema={"task": pl.Utf8, "kind": pl.Utf8, "idx": pl.Int32, "prompt": pl.Utf8, "target": pl.Utf8},
    )


@dataclass
class ScoredCheckpoint:
    """A checkpoint's rows for the warehouse."""

    head_scores: pl.DataFrame
    head_task_scores: pl.DataFrame
    checkpoint_metrics: pl.DataFrame
    prompts: pl.DataFrame  # the FV prompts scored with (empty when FV is skipped)
    ablations: pl.DataFrame  # head-ablation results (empty unless asked for at this checkpoint)
    dtype: str  # precision of the weights while scoring (FV rows say float32 where FV fell back to it)


def _fitting_tasks(prompt_set: PromptSet, n_ctx: int) -> PromptSet:
    """Leave out (and log) FV tasks whose prompts do not fit the context; the prompts table records the rest."""
    fitting = prompt_set.fitting(n_ctx)
    dropped = sorted(set(prompt_set.task_names) - set(fitting.task_names))
    if not fitting.tasks:
        raise InputError(f"no FV task's prompts fit the model's {n_ctx}-token context; use fewer shots (--shots)")
    if dropped:
        log.warning("%d FV task(s) have prompts longer than the %d-token context and are left out: %s",
                    len(dropped), n_ctx, ", ".join(dropped))
    return fitting


class CheckpointScorer:
    """Probe, prompts and held-out text for one model's checkpoints, built once."""

    def __init__(
        self,
        tokenizer,
        tasks: Mapping[str, IclTask],
        config: ScoringConfig = ScoringConfig(),
        heldout_tokens: Tensor | None = None,
        *,
        evaluation_tasks: Mapping[str, IclTask] | None = None,
        n_ctx: int | None = None,
    ) -> None:
        """`evaluation_tasks` (default: `tasks`) are the few-shot accuracy and ablation tasks; with `n_ctx`
        those whose prompts do not fit the context are left out (logged)."""
        self.config = config
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.probe = make_probe(ordinary_token_ids(tokenizer), bos_id, config.induction)
        self.prompt_set = None
        if config.function_vectors is not None:
            self.prompt_set = build_function_vector_prompts(tasks, tokenizer, config.function_vectors)
            if n_ctx is not None:
                self.prompt_set = _fitting_tasks(self.prompt_set, n_ctx)
        self.heldout_tokens = heldout_tokens
        self.icl_inputs = None
        if config.icl is not None:
            heldout = None
            if heldout_tokens is not None:
                heldout = HeldoutTokens(heldout_tokens, config.token_loss.early, config.token_loss.late)
            self.icl_inputs = build_icl_inputs(evaluation_tasks or tasks, tokenizer, config.icl, n_ctx=n_ctx, heldout=heldout)

    def score(self, model: LoadedModel, provenance: Provenance, ablate: bool = False) -> ScoredCheckpoint:
        """Score every head of `model` and its model-level metrics; rows carry `provenance`.

        `ablate` also runs the head-ablation grid and FV execution (costly; a few checkpoints per model).
        """
        induction = score_induction(model, self.probe, self.config.induction)
        head_rows = [head_score_rows(induction, provenance)]
        head, head_stderr = dict(induction.values), dict(induction.stderr)
        task_rows = head_task_score_rows({}, provenance)
        prompts = pl.DataFrame()
        means = None
        if self.prompt_set is not None:
            self.prompt_set.check_fits(model.n_ctx)
            fv = score_function_vector_heads(model, self.prompt_set, self.config.function_vectors)
            head["fv"], head_stderr["fv"], means = fv.fv, fv.stderr, fv.means
            # FV falls back to fp32 when bf16 gives non-finite scores: its rows say which precision they used
            fv_provenance = replace(provenance, dtype=str(fv.dtype).removeprefix("torch."))
            head_rows.append(head_score_rows(HeadScores({"fv": fv.fv}, {"fv": fv.stderr}), fv_provenance))
            task_rows = head_task_score_rows(
                {task: HeadScores({"fv": fv.per_task[task]}, {"fv": fv.per_task_stderr[task]}) for task in fv.per_task},
                fv_provenance)
            prompts = prompt_rows(self.prompt_set)
        metrics = {}
        if self.heldout_tokens is not None:
            metrics = token_loss_score(
                model, self.heldout_tokens, self.config.token_loss.early, self.config.token_loss.late
            )
        metric_rows = checkpoint_metric_rows(metrics, provenance)
        ablations = pl.DataFrame()
        if self.icl_inputs is not None:
            icl_config = self.config.icl if ablate else replace(self.config.icl, ablation=None, function_vector_execution=None)
            icl = run_icl_experiments(model, self.icl_inputs, head, means, provenance, icl_config, head_stderr)
            metric_rows = pl.concat([metric_rows, icl.checkpoint_metrics])
            ablations = icl.ablations
        return ScoredCheckpoint(
            head_scores=pl.concat(head_rows),
            head_task_scores=task_rows,
            checkpoint_metrics=metric_rows,
            prompts=prompts,
            ablations=ablations,
            dtype=provenance.dtype,
        )
