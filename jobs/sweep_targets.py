"""Turn the sweep's command line into validated `ModelTarget`s (every input checked before work starts)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dynamics.catalogue import PYTHIA_STEPS, TOKENS_PER_STEP, parse_steps, pythia_model, revision_for_step, step_for_revision
from dynamics.checkpoints import LocalSource
from dynamics.heldout import check_heldout_file
from dynamics.icl_eval import IclEvalConfig
from dynamics.icl_experiments import IclExperimentConfig
from dynamics.scorers.function_vectors import FunctionVectorConfig
from dynamics.scorers.induction import InductionConfig
from dynamics.scoring import ScoringConfig, TokenLossConfig
from dynamics.tasks import REFERENCE_FV_TASKS
from jobs.sweep_plan import ModelTarget, with_fingerprints

# The embedded default uses the reference's probe and prompt counts, but 4 shots (10-shot prompts do not
# fit the toy models' 128-token context) and 50 few-shot queries per task (CPU budget); the settings
# and prompts are recorded with the scores either way.
TOY_DEFAULTS = {"fv_prompts": 100, "induction_sequences": 1000, "shots": 4, "icl_queries": 50}


def _spread(steps: list[int], earlier: int = 3) -> tuple[int, ...]:
    """The last step and `earlier` steps spread evenly before it (the toy sweep's ablation checkpoints)."""
    picks = {steps[round(i * (len(steps) - 1) / (earlier + 1))] for i in range(1, earlier + 2)}
    return tuple(sorted(picks))


def default_home() -> Path:
    """`$DYNAMICS_HOME`, default `~/.cache/training-dynamics` (the toy suite is cached there too)."""
    return Path(os.environ.get("DYNAMICS_HOME") or Path.home() / ".cache" / "training-dynamics").expanduser()


def build_targets(args: argparse.Namespace) -> list[ModelTarget]:
    if args.max_cache_gb is not None and args.max_cache_gb <= 0:
        raise ValueError(f"--max-cache-gb must be positive (got {args.max_cache_gb})")
    if args.actors is not None and args.actors < 1:
        raise ValueError(f"--actors must be at least 1 (got {args.actors})")
    for flag, value in (("--fv-prompts", args.fv_prompts), ("--induction-sequences", args.induction_sequences)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1 (got {value})")
    if args.no_fv and args.fv_prompts is not None:
        raise ValueError("--no-fv and --fv-prompts conflict: drop one of them")
    if getattr(args, "no_icl", False) and (args.icl_queries is not None or args.ablation_steps is not None):
        raise ValueError("--no-icl conflicts with --icl-queries and --ablation-steps: drop one of them")
    if args.tasks and not Path(args.tasks).is_dir():
        raise FileNotFoundError(f"task folder {args.tasks} does not exist; pass a Todd-format folder with abstractive/ and extractive/")
    targets = []
    for name in args.model or []:
        targets.append(_hub_target(name, args))
    for folder in args.local or []:
        targets.append(_local_target(Path(folder), args, model_id=f"local/{Path(folder).resolve().name}"))
    if not targets:
        if args.steps != "all":
            raise ValueError("--steps needs --model or --local; the default toy sweep scores every toy checkpoint")
        targets = _toy_targets(args)
    for target in targets:
        if target.heldout_path:
            check_heldout_file(Path(target.heldout_path), target.scoring.token_loss.late + 2)
    return [with_fingerprints(target) for target in targets]


def _token_loss(args: argparse.Namespace) -> TokenLossConfig:
    spec = getattr(args, "token_loss_positions", None)
    if not spec:
        return TokenLossConfig()
    try:
        early, late = (int(part) for part in spec.split(","))
    except ValueError as err:
        raise ValueError(f"--token-loss-positions {spec!r} is not EARLY,LATE (two integers, e.g. 50,500)") from err
    return TokenLossConfig(early, late)


def _scoring(args: argparse.Namespace, token_loss: TokenLossConfig, defaults: dict | None = None) -> ScoringConfig:
    """Scoring settings from the flags; `defaults` (the toy sweep's) fill flags the user did not give."""
    defaults = defaults or {}
    pick = {name: getattr(args, name, None) or defaults.get(name)
            for name in ("fv_prompts", "induction_sequences", "shots", "icl_queries")}
    fv = None
    if not args.no_fv:
        fv = FunctionVectorConfig(**{k: v for k, v in {"n_shots": pick["shots"], "n_clean": pick["fv_prompts"],
                                                        "n_corrupted": pick["fv_prompts"]}.items() if v})
    induction = InductionConfig(**({"n_sequences": pick["induction_sequences"]} if pick["induction_sequences"] else {}))
    icl = None
    if not getattr(args, "no_icl", False):
        evaluation = IclEvalConfig(**{k: v for k, v in {"n_shots": pick["shots"], "n_queries": pick["icl_queries"]}.items() if v})
        icl = IclExperimentConfig(evaluation=evaluation, means_from="fv_prompts" if fv else "evaluation_prompts")
    return ScoringConfig(induction=induction, function_vectors=fv, token_loss=token_loss, icl=icl)


def _ablation_steps(args: argparse.Namespace, steps: list[int], model_id: str, default: tuple[int, ...] = ()) -> tuple[int, ...]:
    spec = getattr(args, "ablation_steps", None)
    if spec is None or getattr(args, "no_icl", False):
        return () if getattr(args, "no_icl", False) else default
    if spec == "none":
        return ()
    if spec == "last":
        return (steps[-1],)
    return tuple(parse_steps(spec, steps, model_id))


def _task_settings(args: argparse.Namespace) -> dict:
    if not args.tasks:
        return {}
    return {"tasks_dir": str(Path(args.tasks).resolve()), "task_names": tuple(REFERENCE_FV_TASKS)}


def _hub_target(name: str, args: argparse.Namespace) -> ModelTarget:
    model = pythia_model(name)
    steps = parse_steps(args.steps, list(PYTHIA_STEPS), model.repo_id)
    return ModelTarget(
        model_id=model.repo_id,
        source="hub",
        location=model.repo_id,
        revisions=tuple(revision_for_step(s) for s in steps),
        steps=tuple(steps),
        scoring=_scoring(args, _token_loss(args)),
        ablation_steps=_ablation_steps(args, steps, model.repo_id),
        heldout_path=str(Path(args.heldout).resolve()) if args.heldout else None,
        cache_dir=str(args.cache_dir) if args.cache_dir else None,
        max_cache_bytes=int(args.max_cache_gb * 1e9) if args.max_cache_gb else None,
        tokens_per_step=TOKENS_PER_STEP,
        **_task_settings(args),
    )


def _local_target(
    folder: Path, args: argparse.Namespace, model_id: str, *, defaults: dict | None = None,
    token_loss: TokenLossConfig | None = None, heldout: Path | None = None,
) -> ModelTarget:
    source = LocalSource(folder)  # checks the folder
    by_step = {step_for_revision(r): r for r in source.list_revisions()}
    steps = parse_steps(args.steps, sorted(by_step), model_id)
    heldout_path = heldout or (Path(args.heldout) if args.heldout else None)
    return ModelTarget(
        model_id=model_id,
        source="local",
        location=str(folder.resolve()),
        revisions=tuple(by_step[s] for s in steps),
        steps=tuple(steps),
        scoring=_scoring(args, token_loss or _token_loss(args), defaults),
        ablation_steps=_ablation_steps(args, steps, model_id, default=_spread(steps) if defaults else ()),
        heldout_path=str(heldout_path.resolve()) if heldout_path else None,
        **_task_settings(args),
    )


def _toy_targets(args: argparse.Namespace) -> list[ModelTarget]:
    from dynamics.toy.suite import ensure_suite, heldout_file, read_manifest, token_loss_positions

    suite_dir = ensure_suite(args.toy_preset)
    manifest = read_manifest(suite_dir)
    early, late = token_loss_positions(manifest)
    return [
        _local_target(
            suite_dir / name, args, model_id=f"toy/{name}", defaults=TOY_DEFAULTS, token_loss=TokenLossConfig(early, late),
            heldout=heldout_file(suite_dir),
        )
        for name in manifest["models"]
    ]

