"""Lay out a real Hugging Face hub cache from `save_pretrained` folders, byte for byte as huggingface_hub does.

`models--ORG--NAME/refs/<branch>` holds a 40-hex commit, `snapshots/<commit>/<file>` are relative symlinks
into `blobs/`, and identical files share one blob. Blob names follow the Hub: the sha256 of the content for
LFS-tracked files (weights), the git blob sha1 for the rest. With HF_HUB_OFFLINE=1, huggingface_hub's own
`snapshot_download` and `scan_cache_dir` then serve and manage these revisions as if they had been downloaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_LFS_SUFFIXES = {".safetensors", ".bin", ".model", ".pt", ".h5", ".msgpack"}


def fake_commit(repo_id: str, branch: str) -> str:
    """A deterministic 40-hex commit id for a branch of a test repo."""
    return hashlib.sha1(f"{repo_id}@{branch}".encode()).hexdigest()


def blob_name(file_name: str, data: bytes) -> str:
    if Path(file_name).suffix in _LFS_SUFFIXES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"


def build_hub_cache(cache_dir: Path, repo_id: str, checkpoints: dict[str, Path]) -> dict[str, str]:
    """Add each folder in `checkpoints` (branch → save_pretrained folder) to the cache; returns branch → commit."""
    storage = repo_folder(cache_dir, repo_id)
    commits = {}
    for branch, folder in checkpoints.items():
        commit = fake_commit(repo_id, branch)
        for source in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            data = source.read_bytes()
            blob = storage / "blobs" / blob_name(source.name, data)
            if not blob.exists():
                blob.parent.mkdir(parents=True, exist_ok=True)
                blob.write_bytes(data)
            link = storage / "snapshots" / commit / source.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        ref = storage / "refs" / branch
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
        commits[branch] = commit
    return commits
