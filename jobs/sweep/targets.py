"""What a sweep scores: one `ModelTarget` per model (where its checkpoints come from, how to score them).

`build_targets(config)` turns a `SweepConfig` into validated targets; every input is checked here,
before Ray starts. Targets are plain, picklable data shipped to the scoring actors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from dynamics.checkpoint_scorer import (
    CheckpointScorer,
    ScoringConfig,
    TokenLossConfig,
    scoring_settings,
    tasks_fingerprint,
)
from dynamics.experiments.few_shot import IclEvalConfig
from dynamics.experiments.runner import IclExperimentConfig
from dynamics.heldout import check_heldout_file, load_heldout_tokens
from dynamics.provenance import settings_hash
from dynamics.scorers.function_vectors import FunctionVectorConfig, choose_dtype
from dynamics.scorers.induction import InductionConfig
from dynamics.sources.catalogue import (
    PYTHIA_STEPS,
    TOKENS_PER_STEP,
    parse_steps,
    pythia_model,
    revision_for_step,
    step_for_revision,
)
from dynamics.sources.checkpoints import HubSource, LocalSource
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.todd import REFERENCE_FV_TASKS, evaluation_tasks, load_task_dir
from jobs.sweep.config import SweepConfig

# The embedded default uses the reference's probe and prompt counts, but 4 shots (10-shot prompts do not
# fit the toy models' 128-token context) and 50 few-shot queries per task (CPU budget); the settings
# and prompts are recorded with the scores either way.
TOY_DEFAULTS = {"fv_prompts": 100, "induction_sequences": 1000, "shots": 4, "icl_queries": 50}


@dataclass(frozen=True)
class ModelTarget:
    """One model of a sweep: its checkpoints' source and how every checkpoint is scored."""

    model_id: str  # warehouse name: a Hub repo id, 'local/<name>', or 'toy/<name>' for the toy suite
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
        heldout = {"file": Path(self.heldout_path).name, "sha": self.heldout_hash} if self.heldout_path else None
        return scoring_settings(self.scoring, tasks_source=self.tasks_dir or "builtin", tasks_sha=self.tasks_hash,
                                task_names=self.task_names, heldout=heldout, ablation_steps=self.ablation_steps)

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

    def open_source(self) -> HubSource | LocalSource:
        if self.source == "hub":
            return HubSource(self.location, cache_dir=self.cache_dir, max_cache_bytes=self.max_cache_bytes)
        return LocalSource(Path(self.location))

    def build_scorer(self, tokenizer_dir: Path, n_ctx: int) -> CheckpointScorer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
        heldout = None
        if self.heldout_path:
            heldout = load_heldout_tokens(Path(self.heldout_path), tokenizer, self.scoring.token_loss.late + 2)
        evaluation = self.evaluation_tasks() if self.scoring.icl is not None else None
        return CheckpointScorer(tokenizer, self.tasks(), self.scoring, heldout, evaluation_tasks=evaluation, n_ctx=n_ctx)


def build_targets(config: SweepConfig) -> list[ModelTarget]:
    """The validated targets `config` describes: its Hub models, its local runs, or the toy suite."""
    targets = [_hub_target(name, config) for name in config.models]
    targets += [_local_target(Path(folder), config, model_id=f"local/{Path(folder).name}") for folder in config.local]
    if config.is_toy:
        targets = _toy_targets(config)
    for target in targets:
        if target.heldout_path:
            check_heldout_file(Path(target.heldout_path), target.scoring.token_loss.late + 2)
    return [with_fingerprints(target) for target in targets]


def with_fingerprints(target: ModelTarget) -> ModelTarget:
    """The target with the hashes of its tasks and held-out text filled in (reads those files once)."""
    heldout_hash = ""
    if target.heldout_path:
        heldout_hash = hashlib.sha256(Path(target.heldout_path).read_bytes()).hexdigest()[:16]
    return replace(target, tasks_hash=tasks_fingerprint(target.tasks()), heldout_hash=heldout_hash)


def scoring_config(config: SweepConfig, token_loss: TokenLossConfig, defaults: dict | None = None) -> ScoringConfig:
    """Scoring settings from the config; `defaults` (the toy sweep's) fill the counts it leaves open."""
    defaults = defaults or {}

    def pick(name: str) -> int | None:
        value = getattr(config, name)
        return value if value is not None else defaults.get(name)

    def given(**values) -> dict:
        return {k: v for k, v in values.items() if v is not None}

    fv = None
    if config.fv:
        prompts = pick("fv_prompts")
        fv = FunctionVectorConfig(**given(n_shots=pick("shots"), n_clean=prompts, n_corrupted=prompts))
    induction = InductionConfig(**given(n_sequences=pick("induction_sequences")))
    icl = None
    if config.icl:
        evaluation = IclEvalConfig(**given(n_shots=pick("shots"), n_queries=pick("icl_queries")))
        icl = IclExperimentConfig(evaluation=evaluation, means_from="fv_prompts" if fv else "evaluation_prompts")
    return ScoringConfig(induction=induction, function_vectors=fv, token_loss=token_loss, icl=icl)


def ablation_steps(config: SweepConfig, steps: list[int], model_id: str, default: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The checkpoints that also get the ablation grid: `--ablation-steps`, else `default`; none without ICL."""
    spec = config.ablation_steps
    if not config.icl or spec == "none":
        return ()
    if spec is None:
        return default
    if spec == "last":
        return (steps[-1],)
    return tuple(parse_steps(spec, steps, model_id))


def spread_steps(steps: list[int], earlier: int = 3) -> tuple[int, ...]:
    """The last step and `earlier` steps spread evenly before it (the toy sweep's ablation checkpoints)."""
    picks = {steps[round(i * (len(steps) - 1) / (earlier + 1))] for i in range(1, earlier + 2)}
    return tuple(sorted(picks))


def _token_loss(config: SweepConfig) -> TokenLossConfig:
    return TokenLossConfig(*config.token_loss_positions) if config.token_loss_positions else TokenLossConfig()


def _task_settings(config: SweepConfig) -> dict:
    if not config.tasks_dir:
        return {}
    return {"tasks_dir": config.tasks_dir, "task_names": tuple(REFERENCE_FV_TASKS)}


def _hub_target(name: str, config: SweepConfig) -> ModelTarget:
    model = pythia_model(name)
    steps = parse_steps(config.steps, list(PYTHIA_STEPS), model.repo_id)
    return ModelTarget(
        model_id=model.repo_id,
        source="hub",
        location=model.repo_id,
        revisions=tuple(revision_for_step(s) for s in steps),
        steps=tuple(steps),
        scoring=scoring_config(config, _token_loss(config)),
        ablation_steps=ablation_steps(config, steps, model.repo_id),
        heldout_path=config.heldout,
        cache_dir=config.cache_dir,
        max_cache_bytes=int(config.max_cache_gb * 1e9) if config.max_cache_gb else None,
        tokens_per_step=TOKENS_PER_STEP,
        **_task_settings(config),
    )


def _local_target(
    folder: Path, config: SweepConfig, model_id: str, *, defaults: dict | None = None,
    token_loss: TokenLossConfig | None = None, heldout: Path | None = None,
) -> ModelTarget:
    source = LocalSource(folder)  # checks the folder
    by_step = {step_for_revision(r): r for r in source.list_revisions()}
    steps = parse_steps(config.steps, sorted(by_step), model_id)
    heldout_path = str(heldout.resolve()) if heldout else config.heldout
    return ModelTarget(
        model_id=model_id,
        source="local",
        location=str(folder.resolve()),
        revisions=tuple(by_step[s] for s in steps),
        steps=tuple(steps),
        scoring=scoring_config(config, token_loss or _token_loss(config), defaults),
        ablation_steps=ablation_steps(config, steps, model_id, default=spread_steps(steps) if defaults else ()),
        heldout_path=heldout_path,
        **_task_settings(config),
    )


def _toy_targets(config: SweepConfig) -> list[ModelTarget]:
    from dynamics.toy.suite import ensure_suite, heldout_file, read_manifest, token_loss_positions

    suite_dir = ensure_suite(config.toy_preset)
    manifest = read_manifest(suite_dir)
    early, late = token_loss_positions(manifest)
    return [
        _local_target(
            suite_dir / name, config, model_id=f"toy/{name}", defaults=TOY_DEFAULTS,
            token_loss=TokenLossConfig(early, late), heldout=heldout_file(suite_dir),
        )
        for name in manifest["models"]
    ]
