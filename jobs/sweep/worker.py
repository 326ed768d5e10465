"""The scoring actor of the sweep: a thin shell around `dynamics` calls, one per GPU (or CPU slot).

It keeps, per model, the checkpoint source, the built model (later revisions load into it in place)
and the scorer with its probe and prompts, built once. Only small result frames travel back.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field

import torch

from dynamics.adapters import LoadedModel, load_model
from dynamics.checkpoint_scorer import CheckpointScorer, ScoredCheckpoint
from dynamics.provenance import Provenance
from dynamics.sources.checkpoints import ReadAhead, WeightsIndex
from jobs.sweep.plan import WorkItem
from jobs.sweep.targets import ModelTarget

log = logging.getLogger(__name__)


@dataclass
class WorkResult:
    """What one work item produced: scores, a duplicate notice, or a failure with its reason."""

    item: WorkItem
    status: str  # 'ok', 'duplicate' or 'failed'
    checkpoint: dict = field(default_factory=dict)  # warehouse `checkpoints` columns
    scored: ScoredCheckpoint | None = None
    error: str | None = None
    model_info: dict | None = None  # warehouse `models` columns, from the loaded model


@dataclass
class _Loaded:
    """A fetched checkpoint and, when the model is already built, its tensors read for it."""

    fetched: object  # dynamics.sources.checkpoints.FetchedCheckpoint
    state: dict | None
    read_s: float


class ScoringWorker:
    """Scores work items one at a time, reading the next checkpoint in a background thread meanwhile."""

    def __init__(self, targets: list[ModelTarget], device: str, torch_threads: int | None = None) -> None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.targets = {t.model_id: t for t in targets}
        self.device = device
        self._sources: dict = {}
        self._models: dict[str, LoadedModel] = {}
        self._scorers: dict[str, CheckpointScorer] = {}
        self._ahead = ReadAhead(self._fetch_and_read)

    def ready(self) -> str:
        return f"{self.device}:{torch.cuda.get_device_name() if self.device.startswith('cuda') else 'cpu'}"

    def _source(self, model_id: str):
        if model_id not in self._sources:
            self._sources[model_id] = self.targets[model_id].open_source()
        return self._sources[model_id]

    def score(self, item: WorkItem, upcoming: WorkItem | None, known_weights: dict[str, int]) -> WorkResult:
        """Fetch, load and score one checkpoint; fetch and read `upcoming` meanwhile. A failure is returned as a
        'failed' result (its traceback logged), so that the sweep records it and goes on.

        `known_weights` (weights_sha256 → lowest step scored) lets a known duplicate skip loading.
        """
        source = self._source(item.model_id)
        try:
            return self._score(source, item, upcoming, known_weights)
        except Exception as err:  # recorded as a failed checkpoint; the sweep goes on
            log.warning("checkpoint %s %s failed:\n%s", item.model_id, item.revision, traceback.format_exc())
            return WorkResult(item, "failed", {"revision": item.revision}, error=f"{type(err).__name__}: {err}")
        finally:
            source.release(item.revision)

    def score_one(self, item: WorkItem) -> WorkResult:
        """Score one checkpoint and let a failure raise (`dynamics score`: a bad input is its one-line error)."""
        source = self._source(item.model_id)
        try:
            return self._score(source, item, None, {})
        finally:
            source.release(item.revision)

    def _score(self, source, item: WorkItem, upcoming: WorkItem | None, known_weights: dict[str, int]) -> WorkResult:
        started = time.perf_counter()
        loaded, was_ahead = self._ahead.take(item)
        if upcoming is not None:
            self._ahead.start(upcoming)
        fetched = loaded.fetched
        checkpoint = {
            "revision": item.revision,
            "commit": fetched.commit,
            "weights_sha256": fetched.weights_sha256,
        }
        earlier = WeightsIndex(known_weights).original(fetched.weights_sha256, item.step)
        if earlier is not None:
            return WorkResult(item, "duplicate", {**checkpoint, "duplicate_of": earlier})
        target = self.targets[item.model_id]
        waited_s = time.perf_counter() - started
        model = self._load(item, fetched.path, loaded.state)
        loaded_s = time.perf_counter()
        scorer = self._scorer(item.model_id, source, item.revision, model.n_ctx)
        provenance = Provenance(
            model=item.model_id,
            revision=item.revision,
            step=item.step,
            weights_sha256=fetched.weights_sha256,
            dtype=str(model.dtype).removeprefix("torch."),
            attn_implementation=model.attn_implementation,
            settings=target.settings(),
        )
        scored = scorer.score(model, provenance, ablate=item.step in target.ablation_steps)
        done_s = time.perf_counter()
        checkpoint.update(
            dtype=scored.dtype,
            attn_impl=provenance.attn_implementation,
            # fetch + read (in the background when prefetched) + copy into the model
            load_s=loaded.read_s + (loaded_s - started - waited_s) if was_ahead else loaded_s - started,
            score_s=done_s - loaded_s,
        )
        return WorkResult(item, "ok", checkpoint, scored, model_info=_model_info(model))

    def _fetch_and_read(self, item: WorkItem) -> _Loaded:
        """Fetch a checkpoint and, if its model is built with the right dtype, read its tensors for it."""
        started = time.perf_counter()
        fetched = self._source(item.model_id).fetch(item.revision)
        model = self._models.get(item.model_id)
        dtype = self.targets[item.model_id].dtype_for(item.step, self.device)
        state = model.read_state(fetched.path) if model is not None and model.dtype == dtype else None
        return _Loaded(fetched, state, time.perf_counter() - started)

    def _load(self, item: WorkItem, path, state: dict | None) -> LoadedModel:
        dtype = self.targets[item.model_id].dtype_for(item.step, self.device)
        model = self._models.get(item.model_id)
        if model is None or model.dtype != dtype:
            model = load_model(path, dtype=dtype, device=self.device)
            self._models[item.model_id] = model
        elif state is not None:  # read for this model and dtype by `_fetch_and_read`
            model.apply_state(state, path)
        else:
            model.load_weights(path)
        return model

    def _scorer(self, model_id: str, source, revision: str, n_ctx: int) -> CheckpointScorer:
        if model_id not in self._scorers:
            self._scorers[model_id] = self.targets[model_id].build_scorer(source.tokenizer_dir(revision), n_ctx)
        return self._scorers[model_id]


def _model_info(model: LoadedModel) -> dict:
    return {
        "family": model.family.name,
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "d_model": model.d_model,
        "d_head": model.d_head,
        "n_params": sum(p.numel() for p in model.model.parameters()),
        "vocab_size": model.vocab_size,
        "config": model.config.to_diff_dict(),
    }
