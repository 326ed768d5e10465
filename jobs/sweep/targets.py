"""What a sweep scores: one `ModelTarget` per model (where its checkpoints come from, how to score them).

`build_targets(config)` turns a `SweepConfig` into validated targets; every input is checked here,
before Ray starts (for a local run also which tasks' prompts fit its context: `jobs.sweep.preflight`).
Targets are plain, picklable data shipped to the scoring actors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from dynamics.adapters import check_architecture
from dynamics.checkpoint_scorer import (
    CheckpointScorer,
    ScoringConfig,
    TokenLossConfig,
    scoring_settings,
    task_templates,
    tasks_fingerprint,
)
from dynamics.errors import InputError
from dynamics.experiments.ablations import AblationConfig
from dynamics.experiments.few_shot import IclEvalConfig
from dynamics.experiments.runner import IclExperimentConfig
from dynamics.heldout import check_heldout_file, load_heldout_tokens
from dynamics.provenance import settings_hash
from dynamics.scorers.function_vectors import FunctionVectorConfig, choose_dtype
from dynamics.scorers.induction import InductionConfig
from dynamics.sources.catalogue import (
    PYTHIA_STEPS,
    TOKENS_PER_STEP,
    is_catalogue_name,
    parse_steps,
    pythia_model,
    revision_for_step,
)
from dynamics.sources.checkpoints import HubSource, LocalSource
from dynamics.sources.revisions import checkpoint_revisions, suite_and_seed
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.synthetic import BijectionTasks
from dynamics.tasks.todd import REFERENCE_FV_TASKS, evaluation_tasks, load_task_dir
from jobs.sweep.config import SweepConfig
from jobs.sweep.preflight import preflight


@dataclass(frozen=True)
class ModelTarget:
    """One model of a sweep: its checkpoints' source and how every checkpoint is scored."""

    model_id: str  # warehouse name: a Hub repo id, 'local/<name>', or 'toy/<name>' for the toy suite
    source: str  # 'hub' or 'local'
    location: str  # repo id, or the folder holding step<N>/ checkpoints
    revisions: tuple[str, ...]
    steps: tuple[int, ...]
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tasks_dir: str | None = None  # Todd-format task folder; None = the built-in (or synthetic) tasks
    task_names: tuple[str, ...] | None = None
    synthetic_tasks: BijectionTasks | None = None  # the toy organism's own task family
    heldout_path: str | None = None  # held-out text for the ICL token-loss score (dynamics.heldout)
    cache_dir: str | None = None
    max_cache_bytes: int | None = None
    tasks_hash: str = ""  # fingerprints filled in by `with_fingerprints`
    task_templates: tuple[dict, ...] = ()
    heldout_hash: str = ""
    step_tokens: tuple[int | None, ...] = ()  # training tokens seen at each of `steps`, where published
    ablation_steps: tuple[int, ...] = ()  # checkpoints that also get the ablation grid and FV execution
    suite: str | None = None  # the configuration this run is one seed of (models.suite)
    seed: int | None = None  # its training seed within the suite (models.seed)
    skipped_folders: tuple[str, ...] = ()  # local subfolders left out (--skip-unparsed): no step in their names
    left_out_tasks: tuple[str, ...] = ()  # FV tasks whose prompts exceed the context (`jobs.sweep.preflight`)
    left_out_evaluation_tasks: tuple[str, ...] = ()  # few-shot evaluation tasks whose prompts exceed it
    context_tokens: int | None = None  # the context they were measured against

    def tokens_seen(self, step: int) -> int | None:
        return dict(zip(self.steps, self.step_tokens)).get(step)

    def revision_of(self, step: int) -> str:
        return dict(zip(self.steps, self.revisions))[step]

    def settings(self) -> dict:
        """Everything that changes a score; its hash keys the checkpoint's rows (resume compares it)."""
        heldout = {"file": Path(self.heldout_path).name, "sha": self.heldout_hash} if self.heldout_path else None
        source = self.tasks_dir or ("synthetic" if self.synthetic_tasks else "builtin")
        settings = scoring_settings(self.scoring, tasks_source=source, tasks_sha=self.tasks_hash,
                                    templates=self.task_templates, task_names=self.task_names, heldout=heldout,
                                    ablation_steps=self.ablation_steps)
        if self.left_out_tasks or self.left_out_evaluation_tasks:  # absent when all fit: earlier hashes stay valid
            tasks = settings["tasks"]
            if tasks["names"] is not None:
                tasks["names"] = [name for name in tasks["names"] if name not in self.left_out_tasks]
            tasks["left_out"] = {"function_vectors": list(self.left_out_tasks),
                                 "evaluation": list(self.left_out_evaluation_tasks),
                                 "reason": f"prompts longer than the {self.context_tokens}-token context"}
        return settings

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings())

    def dtype_for(self, step: int, device: str) -> torch.dtype:
        return choose_dtype(step, device)

    def tasks(self) -> dict:
        """The FV tasks scored: those named, less those left out for not fitting the context."""
        return {name: task for name, task in self._named_tasks().items() if name not in self.left_out_tasks}

    def _named_tasks(self) -> dict:
        if self.synthetic_tasks is not None and not self.tasks_dir:
            return self.synthetic_tasks.tasks()
        tasks = load_task_dir(Path(self.tasks_dir), self.task_names) if self.tasks_dir else builtin_tasks()
        if self.task_names and not self.tasks_dir:
            tasks = {name: tasks[name] for name in self.task_names}
        return tasks

    def evaluation_tasks(self) -> dict:
        """Few-shot accuracy and ablation tasks: the reference's evaluation list for a Todd folder (less those
        left out for not fitting the context)."""
        tasks = evaluation_tasks(self.tasks_dir) if self.tasks_dir else self._named_tasks()
        return {name: task for name, task in tasks.items() if name not in self.left_out_evaluation_tasks}

    def open_source(self) -> HubSource | LocalSource:
        if self.source == "hub":
            return HubSource(self.location, cache_dir=self.cache_dir, max_cache_bytes=self.max_cache_bytes,
                             steps=dict(zip(self.revisions, self.steps)))
        return LocalSource(Path(self.location), skip_unparsed=True)  # build_targets checked the folder names

    def build_scorer(self, tokenizer_dir: Path, n_ctx: int) -> CheckpointScorer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
        heldout = None
        if self.heldout_path:
            heldout = load_heldout_tokens(Path(self.heldout_path), tokenizer, self.scoring.token_loss.late + 2)
        tasks = self.tasks()
        evaluation = self.evaluation_tasks() if self.scoring.icl is not None else None
        scorer = CheckpointScorer(tokenizer, tasks, self.scoring, heldout, evaluation_tasks=evaluation, n_ctx=n_ctx)
        _check_nothing_left_out(scorer, tasks, evaluation, n_ctx)
        return scorer


def build_targets(config: SweepConfig) -> list[ModelTarget]:
    """The validated targets `config` describes: its Hub models, its local runs, or the toy suite."""
    targets = [_hub_target(name, config) for name in config.models]
    targets += [_local_target(Path(folder), config, model_id=model_id) for folder, model_id in local_model_ids(config)]
    targets = [_with_suite(target, config, seed) for target, seed in zip(targets, config.seeds or [None] * len(targets))]
    if config.is_toy:
        targets = _toy_targets(config)
    _check_distinct_ids(targets)
    for target in targets:
        if target.heldout_path:
            check_heldout_file(Path(target.heldout_path), target.scoring.token_loss.late + 2)
    return [with_fingerprints(preflight(target)) for target in targets]


def local_model_ids(config: SweepConfig) -> list[tuple[str, str]]:
    """(folder, model id) of each --local run: 'local/<--name>', or 'local/<folder name>' without --name."""
    names = config.names or [Path(folder).name for folder in config.local]
    return [(folder, f"local/{name}") for folder, name in zip(config.local, names)]


def _check_distinct_ids(targets: list[ModelTarget]) -> None:
    """Two runs stored under one id would overwrite (or skip) each other's checkpoints: refuse, naming them."""
    by_id: dict[str, list[str]] = {}
    for target in targets:
        by_id.setdefault(target.model_id, []).append(target.location)
    clashes = [f"{model_id} for {' and '.join(locations)}" for model_id, locations in by_id.items() if len(locations) > 1]
    if clashes:
        raise InputError(f"two runs would be stored under one id ({'; '.join(clashes)}); name each --local run with "
                         "--name, one per --local in the same order (e.g. --name run-a --name run-b)")


def _check_nothing_left_out(scorer: CheckpointScorer, tasks: dict, evaluation: dict | None, n_ctx: int) -> None:
    """Fail (the checkpoint is recorded as failed) where the scorer would leave out tasks nobody decided to leave
    out: a Hub model's prompts are first measured here, in the actor."""
    lost = []
    if scorer.prompt_set is not None:
        lost += [f"{name} (FV)" for name in tasks if name not in scorer.prompt_set.task_names]
    if scorer.icl_inputs is not None and evaluation is not None:
        kept = scorer.icl_inputs.prompts.few_shot.task_names
        lost += [f"{name} (few-shot evaluation)" for name in evaluation if name not in kept]
    if lost:
        raise InputError(f"{len(lost)} task(s) have prompts longer than the model's {n_ctx}-token context: "
                         f"{', '.join(lost)}; lower --shots so that every task is scored")


def with_fingerprints(target: ModelTarget) -> ModelTarget:
    """The target with the hashes of its tasks and held-out text filled in (reads those files once)."""
    heldout_hash = ""
    if target.heldout_path:
        heldout_hash = hashlib.sha256(Path(target.heldout_path).read_bytes()).hexdigest()[:16]
    tasks = target.tasks()
    return replace(target, tasks_hash=tasks_fingerprint(tasks), task_templates=task_templates(tasks),
                   heldout_hash=heldout_hash)


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
    induction = InductionConfig(**given(n_sequences=pick("induction_sequences"), repeat_len=defaults.get("repeat_len")))
    icl = None
    if config.icl:
        evaluation = IclEvalConfig(**given(n_shots=pick("shots"), n_queries=pick("icl_queries")))
        ablation = AblationConfig()
        if "ablation_heads" in defaults:
            ablation = AblationConfig(fractions=tuple(float(n) for n in defaults["ablation_heads"]),
                                      exclude_fraction=float(defaults["exclude_heads"]))
        icl = IclExperimentConfig(evaluation=evaluation, ablation=ablation,
                                  means_from="fv_prompts" if fv else "evaluation_prompts")
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


def _with_suite(target: ModelTarget, config: SweepConfig, seed: int | None) -> ModelTarget:
    """The target with its suite and seed: --suite / --seed where given, else recognised from a Hub repo id."""
    known_suite, known_seed = suite_and_seed(target.location) if target.source == "hub" else (None, None)
    return replace(target, suite=config.suite or known_suite, seed=known_seed if seed is None else seed)


def _hub_target(name: str, config: SweepConfig) -> ModelTarget:
    if not is_catalogue_name(name) or config.revision_pattern is not None or config.revisions:
        return _listed_hub_target(name, config)
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
        step_tokens=tuple(s * TOKENS_PER_STEP for s in steps),
        **_task_settings(config),
    )


def _listed_hub_target(repo_id: str, config: SweepConfig) -> ModelTarget:
    """Any Hub repo whose branches (or tags) are checkpoints: steps from their names (dynamics.sources.revisions).

    Only the first selected revision's config.json is fetched here, so an architecture no adapter knows fails
    before any weights are downloaded.
    """
    source = HubSource(repo_id, cache_dir=config.cache_dir)
    found = checkpoint_revisions(source.list_revisions(), repo_id, config.revision_pattern, config.revisions)
    by_step = {checkpoint.step: checkpoint for checkpoint in found}
    steps = parse_steps(config.steps, sorted(by_step), repo_id)
    check_architecture(source.fetch_config(by_step[steps[0]].revision), repo_id)
    return ModelTarget(
        model_id=repo_id,
        source="hub",
        location=repo_id,
        revisions=tuple(by_step[s].revision for s in steps),
        steps=tuple(steps),
        scoring=scoring_config(config, _token_loss(config)),
        ablation_steps=ablation_steps(config, steps, repo_id),
        heldout_path=config.heldout,
        cache_dir=config.cache_dir,
        max_cache_bytes=int(config.max_cache_gb * 1e9) if config.max_cache_gb else None,
        step_tokens=tuple(by_step[s].tokens for s in steps),
        **_task_settings(config),
    )


def _local_target(
    folder: Path, config: SweepConfig, model_id: str, *, defaults: dict | None = None,
    token_loss: TokenLossConfig | None = None, heldout: Path | None = None,
    synthetic_tasks: BijectionTasks | None = None,
) -> ModelTarget:
    source = LocalSource(folder, skip_unparsed=config.skip_unparsed)  # checks the folder and its subfolders' names
    by_step = source.steps()
    steps = parse_steps(config.steps, sorted(by_step), model_id)
    check_architecture(source.config_file([by_step[s] for s in steps]), model_id)
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
        synthetic_tasks=synthetic_tasks,
        skipped_folders=source.skipped,
        **_task_settings(config),
    )


def _toy_targets(config: SweepConfig) -> list[ModelTarget]:
    """The toy suite's models, trained once per seed of --toy-seeds: 'toy/<name>' with the preset's own seed,
    'toy/<name>-seed<N>' otherwise, each a seed of suite 'toy/<name>'."""
    from dynamics.toy.suite import ensure_suite, heldout_file, preset, read_manifest, token_loss_positions

    own_seed = preset(config.toy_preset).seed
    targets = []
    for seed in config.toy_seeds or (own_seed,):
        suite_dir = ensure_suite(config.toy_preset, seed=seed)
        manifest = read_manifest(suite_dir)
        early, late = token_loss_positions(manifest)
        # the suite's own scoring defaults (shots and probe lengths that fit its context) and tasks
        synthetic = BijectionTasks(**manifest["tasks"]) if manifest["tasks"] else None
        suffix = "" if seed == own_seed else f"-seed{seed}"
        targets += [
            replace(_local_target(
                suite_dir / name, config, model_id=f"toy/{name}{suffix}", defaults=manifest["scoring"],
                token_loss=TokenLossConfig(early, late), heldout=heldout_file(suite_dir), synthetic_tasks=synthetic,
            ), suite=f"toy/{name}", seed=seed)
            for name in manifest["models"]
        ]
    return targets
