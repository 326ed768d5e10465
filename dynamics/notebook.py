"""Scoring a model that is already in memory (a notebook, a training loop), without the sweep.

`score_model` runs the sweep's own scorers on a transformers model and returns the rows the sweep
would write for it, with the same provenance columns, as Polars frames:

    from transformers import AutoTokenizer
    from dynamics.adapters import load_model
    from dynamics.notebook import score_model
    scored = score_model(load_model(path).model, AutoTokenizer.from_pretrained(path, trust_remote_code=False))
    scored.head_scores        # one row per (layer, head, metric): value, stderr, provenance
    scored.checkpoint_metrics  # few-shot accuracy (and the ICL token-loss score with heldout_tokens)

To look at stored results instead, `warehouse.queries.views(warehouse)` opens every analysis view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dynamics.adapters import from_module
from dynamics.checkpoint_scorer import CheckpointScorer, ScoredCheckpoint, ScoringConfig, scoring_settings
from dynamics.provenance import Provenance
from dynamics.tasks.base import IclTask
from dynamics.tasks.builtin import builtin_tasks


def score_model(
    model: nn.Module,
    tokenizer,
    *,
    tasks: Mapping[str, IclTask] | None = None,
    config: ScoringConfig = ScoringConfig(),
    model_id: str = "in-memory",
    revision: str = "in-memory",
    step: int = 0,
    heldout_tokens: Tensor | None = None,
    ablate: bool = False,
) -> ScoredCheckpoint:
    """Every head's scores (with standard errors) and the model-level metrics of an in-memory model.

    Args:
        model: a transformers causal LM of a supported family (GPT-NeoX, GPT-2, Llama); put it on the
            device and in the dtype to score in first.
        tokenizer: its tokenizer (prompts and the induction probe are built from it).
        tasks: ICL tasks for the FV score and few-shot accuracy; default the built-in tasks.
        config: what to score (`ScoringConfig`; e.g. fewer prompts for a quick look).
        model_id, revision, step: how the rows name the model and checkpoint.
        heldout_tokens: (rows, T) ids for the ICL token-loss score; None skips it.
        ablate: also run the head-ablation grid and FV execution (slow).
    Returns:
        The frames the sweep writes (`head_scores`, `head_task_scores`, `checkpoint_metrics`, `prompts`,
        `ablations`). `weights_sha256` hashes the model's tensors in memory (the sweep hashes weight files).
    """
    tasks = builtin_tasks() if tasks is None else tasks
    loaded = from_module(model)
    scorer = CheckpointScorer(tokenizer, tasks, config, heldout_tokens, n_ctx=loaded.n_ctx)
    heldout = None if heldout_tokens is None else {"rows": heldout_tokens.shape[0], "sha": _tensor_sha256(heldout_tokens)}
    settings = scoring_settings(config, tasks, tasks_source="in-memory", heldout=heldout)
    provenance = Provenance(
        model=model_id, revision=revision, step=step, weights_sha256=_weights_sha256(model),
        dtype=str(loaded.dtype).removeprefix("torch."), attn_implementation=loaded.attn_implementation,
        settings=settings,
    )
    return scorer.score(loaded, provenance, ablate=ablate)


def _weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's tensors (name order), so two calls on the same weights share the hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_sha256(tensor: Tensor) -> str:
    return hashlib.sha256(_tensor_bytes(tensor)).hexdigest()[:16]


def _tensor_bytes(tensor: Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()
