"""Checkpoint sources: turn (model, revision) into local files ready to load, behind one small interface.

- `LocalSource(root)`: a folder of `save_pretrained` checkpoints `root/step<N>/` (a local training run).
- `HubSource(repo_id)`: Hugging Face Hub branches through huggingface_hub's own cache and download code.
  Each branch is resolved to its commit once and downloaded by commit; with HF_HUB_OFFLINE=1 everything
  comes from the cache (branch → commit from its `refs/` files). A size bound evicts released revisions,
  safely across worker processes (`dynamics.sources.cache_budget`).

Every fetch reports the sha256 of the weight files, so branches serving identical weights are noticed
(`WeightsIndex`; Pythia's step0 and step1 are the same model). Nothing here builds a torch module:
loading is `dynamics.adapters.load_model` / `LoadedModel.load_weights`.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from dynamics.errors import InputError, MissingInputError
from dynamics.sources.cache_budget import SharedCacheBudget
from dynamics.sources.catalogue import (
    PYTHIA_REVISIONS,
    PYTHIA_STEPS,
    check_published,
    describe_steps,
    is_pythia_repo,
    step_for_revision,
)
from dynamics.sources.weight_files import (
    BIN_PATTERNS,
    SAFETENSORS_PATTERNS,
    TOKENIZER_FILES,
    check_weight_file,
    corrupt_file_error,
    select_weight_files,
    sha256_of_files,
)

log = logging.getLogger(__name__)
Key = TypeVar("Key")
Value = TypeVar("Value")

# a local run's checkpoint folders: save_pretrained runs' step<N>, Hugging Face Trainer's checkpoint-<N>
_STEP_DIR = re.compile(r"(?:step|checkpoint-)(\d+)")
_CHECKPOINT_LIKE = re.compile(r"step|checkpoint", re.IGNORECASE)  # a folder named so must give its step
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FetchedCheckpoint:
    """A checkpoint's files on local disk, with what identifies them."""

    model_id: str
    revision: str  # branch name, e.g. 'step1000'
    step: int | None  # None for a branch that names no step
    path: Path  # folder with config.json, the weights and (usually) tokenizer files
    commit: str | None  # the commit the branch resolved to; None for local checkpoints
    weights_sha256: str  # over the weight files' bytes, in sorted file order
    files: tuple[str, ...]  # names under `path` that belong to the checkpoint


class CheckpointSource(Protocol):
    """Where checkpoints come from. `fetch` returns files ready to load; `release` lets them go."""

    model_id: str

    def list_revisions(self) -> list[str]: ...

    def fetch(self, revision: str) -> FetchedCheckpoint: ...

    def release(self, revision: str) -> None: ...

    def tokenizer_dir(self, revision: str) -> Path: ...


class WeightsIndex:
    """weights_sha256 → the lowest step with those weights: how branches serving identical weights are noticed.

    The lower step is the original and the other its duplicate, whichever was fetched first, so a sweep
    whose checkpoints finish out of order still marks the later step as the duplicate.
    """

    def __init__(self, known: Mapping[str, int] | None = None) -> None:
        self._first = dict(known or {})

    def original(self, weights_sha256: str, step: int) -> int | None:
        """The lower step with the same weights, or None."""
        first = self._first.get(weights_sha256)
        return first if first is not None and first < step else None

    def add(self, weights_sha256: str, step: int) -> int | None:
        """Record a step's weights; returns a higher step with the same weights that is now its duplicate."""
        first = self._first.get(weights_sha256)
        if first is None or step < first:
            self._first[weights_sha256] = step
        return first if first is not None and first > step else None

    def as_dict(self) -> dict[str, int]:
        return dict(self._first)


class ReadAhead(Generic[Key, Value]):
    """Runs `load(key)` for the next key in one background thread while the caller works on the current one.

    The sweep's scoring actor reads the next checkpoint (download or hash, then its tensors) while it
    scores this one; `take` returns what was read ahead, or reads now when nothing was started.
    """

    def __init__(self, load: Callable[[Key], Value]) -> None:
        self._load = load
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[Key, Future[Value]] = {}

    def start(self, key: Key) -> None:
        if key in self._pending:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._pending[key] = self._executor.submit(self._load, key)

    def take(self, key: Key) -> tuple[Value, bool]:
        """(the result for `key`, whether it was read ahead)."""
        pending = self._pending.pop(key, None)
        return (pending.result(), True) if pending is not None else (self._load(key), False)


def _file_names(folder: Path, weights: list[Path]) -> tuple[str, ...]:
    """The checkpoint's own files under `folder` (a Hub snapshot may hold others, e.g. generation_config.json)."""
    names = {"config.json", *TOKENIZER_FILES, *(w.name for w in weights)}
    return tuple(sorted(n for n in names if (folder / n).is_file()))


def _hash_weights(folder: Path, sidecar: Path | None) -> tuple[list[Path], str]:
    weights = select_weight_files(folder)
    for weight_file in weights:
        check_weight_file(weight_file)
    return weights, sha256_of_files(weights, sidecar)


class LocalSource:
    """A local run's checkpoints, sorted by step: `root/step<N>/` as written by `save_pretrained`, or
    `root/checkpoint-<N>/` as written by Hugging Face's Trainer.

    A tokenizer may sit in each step folder or once in `root` itself. A folder whose name starts with
    'step' or 'checkpoint' (or that holds a config.json) but gives no step, and two folders naming one step
    (`step01`, `step1`), are refused with their names listed, or with `skip_unparsed` left out and listed
    in `skipped`. A step folder without config.json stays in the list: fetching it fails with the reason,
    so a sweep records it as a failed checkpoint.
    """

    def __init__(self, root: Path, skip_unparsed: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingInputError(f"no checkpoint folder {self.root}; pass the folder that holds step<N>/ subfolders")
        self.model_id = str(self.root)
        by_step: dict[int, list[str]] = {}
        unparsed = []
        for child in sorted(self.root.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            if match := _STEP_DIR.fullmatch(child.name):
                by_step.setdefault(int(match.group(1)), []).append(child.name)
            elif _CHECKPOINT_LIKE.match(child.name) or (child / "config.json").is_file():
                unparsed.append(child.name)
        clashes = {step: names for step, names in by_step.items() if len(names) > 1}
        self.skipped = tuple(sorted([*unparsed, *(name for names in clashes.values() for name in names)]))
        if self.skipped and not skip_unparsed:
            raise InputError(_unparsed_message(self.root, unparsed, clashes))
        self._steps = {step: names[0] for step, names in by_step.items() if step not in clashes}
        if not self._steps:
            raise MissingInputError(
                f"no checkpoints in {self.root}: expected step<N>/ subfolders (save_pretrained) or checkpoint-<N>/ "
                "(Hugging Face Trainer) holding config.json and weights"
                + (f"; left out: {', '.join(self.skipped)}" if self.skipped else "")
            )

    def steps(self) -> dict[int, str]:
        """step → its folder name (the revision), ascending."""
        return {step: self._steps[step] for step in sorted(self._steps)}

    def config_file(self, revisions: list[str]) -> Path:
        """config.json of the first of `revisions` that has one (the others are recorded as failed when fetched)."""
        for revision in revisions:
            if (path := self._folder(revision) / "config.json").is_file():
                return path
        raise MissingInputError(f"none of the checkpoint folders in {self.root} ({', '.join(revisions[:5])}"
                                f"{', …' if len(revisions) > 5 else ''}) has a config.json; save them with save_pretrained")

    def list_revisions(self) -> list[str]:
        return [self._steps[step] for step in sorted(self._steps)]

    def release(self, revision: str) -> None:
        """Nothing to free: local checkpoints are the user's files and are never deleted."""

    def tokenizer_dir(self, revision: str) -> Path:
        for folder in (self._folder(revision), self.root):
            if (folder / "tokenizer.json").is_file():
                return folder
        raise MissingInputError(
            f"no tokenizer.json in {self._folder(revision)} or {self.root}; save the tokenizer in one of them"
        )

    def _folder(self, revision: str) -> Path:
        if revision not in self._steps.values():
            raise InputError(
                f"revision {revision!r} is not among the checkpoints in {self.root} "
                f"({describe_steps(sorted(self._steps))})"
            )
        return self.root / revision

    def fetch(self, revision: str) -> FetchedCheckpoint:
        folder = self._folder(revision)
        if not (folder / "config.json").is_file():
            raise MissingInputError(f"checkpoint folder {folder} has no config.json; save the checkpoint with "
                                    "save_pretrained (it writes config.json beside the weights)")
        weights, digest = _hash_weights(folder, self.root / ".dynamics" / "sha256.json")
        return FetchedCheckpoint(
            model_id=self.model_id,
            revision=revision,
            step={name: step for step, name in self._steps.items()}[revision],
            path=folder,
            commit=None,
            weights_sha256=digest,
            files=_file_names(folder, weights),
        )


def _unparsed_message(root: Path, unparsed: list[str], clashes: dict[int, list[str]]) -> str:
    problems = []
    if unparsed:
        problems.append(f"{len(unparsed)} folder(s) whose names give no step: {', '.join(unparsed)} (a checkpoint folder "
                        "is step<N> or checkpoint-<N>, N a whole number)")
    problems += [f"folders {' and '.join(names)} both name step {step}" for step, names in sorted(clashes.items())]
    return (f"cannot tell the checkpoints in {root} apart: {'; '.join(problems)}; rename or move them, or pass "
            "--skip-unparsed to sweep the others")


class HubSource:
    """Branches of a Hugging Face Hub model repo, fetched into (and evicted from) the local Hub cache.

    Args:
        repo_id: e.g. 'EleutherAI/pythia-160m-deduped'.
        cache_dir: the hub cache folder; huggingface_hub's default (HF_HUB_CACHE) when None.
        max_cache_bytes: bound on the cache folder's size; released revisions are evicted, least recently
            released first, to stay under it. None keeps everything.
        steps: revision → training step, for repos whose revisions are not named step<N>
            (`dynamics.sources.revisions`).
    """

    def __init__(self, repo_id: str, cache_dir: Path | None = None, max_cache_bytes: int | None = None,
                 steps: Mapping[str, int] | None = None) -> None:
        from huggingface_hub import constants

        self.model_id = repo_id
        self.cache_dir = Path(cache_dir or constants.HF_HUB_CACHE)
        self._offline = constants.HF_HUB_OFFLINE
        self._storage = self.cache_dir / f"models--{repo_id.replace('/', '--')}"
        self._pythia = is_pythia_repo(repo_id)
        self._steps = dict(steps or {})  # revision → step, for naming schemes other than step<N>
        self._refs: dict[str, str] | None = None  # branch or tag → commit, from the Hub (online only)
        self._held: dict[str, str] = {}  # revision → commit fetched and not yet released
        self._budget = SharedCacheBudget(self.cache_dir, max_cache_bytes)

    def list_revisions(self) -> list[str]:
        """The 154 step branches for Pythia repos; otherwise the repo's branches and tags (offline: those cached).

        Tags count because some suites publish checkpoints as tags (Stanford CRFM's `checkpoint-<N>`).
        """
        if self._pythia:
            return list(PYTHIA_REVISIONS)
        names = self._cached_refs() if self._offline else list(self._hub_refs())
        return sorted(names, key=_revision_order)

    def release(self, revision: str) -> None:
        """The caller is done with the revision; it may now be evicted to respect the size bound."""
        commit = self._held.pop(revision, None)
        if commit is not None:
            self._budget.release(commit)

    def tokenizer_dir(self, revision: str) -> Path:
        """The folder holding tokenizer.json: the fetched snapshot of `revision` (fetch it first)."""
        commit = self._held.get(revision)
        folder = self._storage / "snapshots" / (commit or self.resolve(revision))
        if not (folder / "tokenizer.json").is_file():
            raise MissingInputError(f"revision {revision} of {self.model_id} has no tokenizer.json in {folder}")
        return folder

    def resolve(self, revision: str) -> str:
        """The commit a branch points to (offline: as recorded in the cache's refs/ folder)."""
        if _COMMIT.fullmatch(revision):
            return revision
        if self._offline:
            ref = self._storage / "refs" / revision
            if not ref.is_file():
                raise InputError(self._not_cached_message(revision))
            return ref.read_text().strip()
        refs = self._hub_refs()
        if revision not in refs:
            raise InputError(
                f"revision {revision!r} does not exist in {self.model_id}; "
                f"its branches and tags include {', '.join(sorted(refs)[:5])} ({len(refs)} in all)"
            )
        return refs[revision]

    def _not_cached_message(self, revision: str) -> str:
        return (
            f"revision {revision} of {self.model_id} is not in the cache at {self.cache_dir} and HF_HUB_OFFLINE=1; "
            "run once with network or pass --cache-dir"
        )

    def _hub_refs(self) -> dict[str, str]:
        if self._refs is None:
            from huggingface_hub import HfApi
            from huggingface_hub.errors import RepositoryNotFoundError
            from huggingface_hub.utils import httpx

            try:
                refs = HfApi().list_repo_refs(self.model_id)
            except RepositoryNotFoundError as err:
                raise InputError(
                    f"no model repo {self.model_id} on the Hub (or it is private or gated and no token is set); "
                    "check the name"
                ) from err
            except httpx.TransportError as err:
                raise InputError(
                    f"cannot reach the Hub to list the branches of {self.model_id} ({err}); check the network, "
                    "or set HF_HUB_OFFLINE=1 to use what is cached"
                ) from err
            self._refs = {ref.name: ref.target_commit for ref in [*refs.tags, *refs.branches]}
        return self._refs

    def _cached_refs(self) -> list[str]:
        refs = self._storage / "refs"
        if not refs.is_dir():
            raise InputError(
                f"{self.model_id} has nothing in the cache at {self.cache_dir} and HF_HUB_OFFLINE=1; "
                "run once with network or pass --cache-dir"
            )
        return [ref.relative_to(refs).as_posix() for ref in refs.rglob("*") if ref.is_file()]

    def fetch(self, revision: str) -> FetchedCheckpoint:
        if self._pythia:
            _check_pythia_revision(revision, self.model_id)
        commit = self.resolve(revision)
        # Marked in use before downloading, so no other process evicts it meanwhile; fetching a revision
        # this source already holds adds no second hold, so one release always frees it.
        newly_held = self._held.get(revision) != commit
        if newly_held:
            self._budget.acquire(commit)
        try:
            folder = self._download(revision, commit)
            weights, digest = _hash_weights(folder, self.cache_dir / ".dynamics" / "sha256.json")
            _check_blob_digest(weights, digest)
        except BaseException:
            if newly_held:
                self._budget.forget(commit)
            raise
        self._held[revision] = commit
        return FetchedCheckpoint(
            model_id=self.model_id,
            revision=revision,
            step=self._steps.get(revision, _step_of(revision, self._pythia)),
            path=folder,
            commit=commit,
            weights_sha256=digest,
            files=_file_names(folder, weights),
        )

    def fetch_config(self, revision: str) -> Path:
        """The revision's config.json alone, no weights: lets a sweep check the architecture before downloading."""
        commit = self.resolve(revision)
        config = self._snapshot(revision, commit, ["config.json"]) / "config.json"
        if not config.is_file():
            raise InputError(f"revision {revision} of {self.model_id} has no config.json; it is not a transformers "
                             "checkpoint")
        self._record_ref(revision, commit)
        return config

    def _download(self, revision: str, commit: str) -> Path:
        """Snapshot folder of `commit`: safetensors when the revision has them, `.bin` only otherwise."""
        common = ["config.json", *TOKENIZER_FILES]
        folder = self._snapshot(revision, commit, [*SAFETENSORS_PATTERNS, *common])
        if not any(folder.glob("*.safetensors")):
            folder = self._snapshot(revision, commit, [*BIN_PATTERNS, *common])
        if broken := [p.name for p in folder.iterdir() if not p.exists()]:
            if self._offline:
                raise InputError(
                    f"revision {revision} of {self.model_id} in {folder} lost the blobs of {', '.join(broken)}; "
                    "run once with network to fetch them again"
                )
            # A shared blob evicted by another process between hf's existence check and its symlink.
            folder = self._snapshot(revision, commit, [*broken])
        self._record_ref(revision, commit)
        return folder

    def _snapshot(self, revision: str, commit: str, patterns: list[str]) -> Path:
        from huggingface_hub import ResolvedRevision, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

        pinned = ResolvedRevision(commit, initial=revision, repo_id=self.model_id)
        try:
            return Path(
                snapshot_download(self.model_id, revision=pinned, allow_patterns=patterns, cache_dir=self.cache_dir)
            )
        except LocalEntryNotFoundError as err:
            if self._offline:
                raise InputError(self._not_cached_message(revision)) from err
            raise InputError(
                f"cannot download revision {revision} of {self.model_id} ({err}); check the network"
            ) from err
        except RevisionNotFoundError as err:
            raise InputError(f"revision {revision} ({commit}) no longer exists in {self.model_id}") from err

    def _record_ref(self, revision: str, commit: str) -> None:
        """Write refs/<branch> as huggingface_hub does (atomically), so offline runs can resolve it later.

        Downloads by commit skip this, and it must follow the snapshot: a ref to a missing snapshot makes
        `scan_cache_dir` reject the whole repo.
        """
        if _COMMIT.fullmatch(revision):
            return
        ref = self._storage / "refs" / revision
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f"{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, ref)


def _check_blob_digest(weights: list[Path], digest: str) -> None:
    """Catch a weight blob changed on disk after download, for the usual single-file checkpoint.

    The Hub cache names an LFS blob by its content's sha256, and `digest` is the sha256 over the weight
    files, so for one file the two must agree; a header check alone misses flipped bytes in the tensors.
    """
    if len(weights) != 1:
        return
    blob = weights[0].resolve()
    if _SHA256.fullmatch(blob.name) and blob.name != digest:
        raise corrupt_file_error(weights[0], f"its sha256 is {digest[:12]}…, not the {blob.name[:12]}… it was stored as")


def _check_pythia_revision(revision: str, model_id: str) -> None:
    """Catch a mistyped Pythia revision before any network call, naming the nearest published steps."""
    if revision == "main" or revision in PYTHIA_REVISIONS or _COMMIT.fullmatch(revision):
        return
    step = _step_of(revision, pythia=True)
    if step is None:
        raise InputError(f"revision {revision!r} is not a branch of {model_id}; use 'main' or step<N> like 'step1000'")
    check_published(step, list(PYTHIA_STEPS), model_id)


def _revision_order(revision: str) -> tuple[bool, int, str]:
    """Step branches first, by step; then other branches by name."""
    step = _step_of(revision, pythia=False)
    return (step is None, step or 0, revision)


def _step_of(revision: str, pythia: bool) -> int | None:
    """'step1000' → 1000; Pythia's 'main' → 143000; any other branch name → None."""
    if revision == "main" and not pythia:
        return None
    try:
        return step_for_revision(revision)
    except ValueError:
        return None
