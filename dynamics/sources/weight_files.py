"""A checkpoint folder's weight files: which ones count, whether they are intact, and their sha256.

The sha256 identifies a checkpoint's weights independently of its branch name, which is how the service
notices branches that serve the same weights (Pythia's step0 and step1; docs/methods.md, "Duplicate checkpoints").
Hashing a 14 GB checkpoint takes a minute, so digests are remembered in a JSON sidecar keyed by each
file's real path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from filelock import FileLock

from dynamics.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

SAFETENSORS_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
BIN_PATTERNS = ("*.bin", "*.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
_CHUNK_BYTES = 16 * 2**20


def select_weight_files(directory: Path) -> list[Path]:
    """The tensor files to load, sorted by name: every `*.safetensors`, or every `*.bin` when there is none.

    `.bin` files are only a fallback because loading them unpickles (with weights_only=True).
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise MissingInputError(f"no weight files (*.safetensors or *.bin) in {directory}")
    return files


def corrupt_file_error(path: Path, reason: str) -> ValueError:
    """The one-line error for an unreadable weight file; names the blob behind a Hub-cache symlink."""
    path = Path(path)
    target = path.resolve()
    shown = f"{path} (blob {target})" if target != path.absolute() else str(path)
    return InputError(
        f"weight file {shown} is corrupt or truncated ({reason}); delete {target} and fetch the revision again"
    )


def check_weight_file(path: Path) -> None:
    """Raise `corrupt_file_error` unless a safetensors file's header parses and its tensors fill the file.

    Reads only the header, so it is cheap next to hashing; `.bin` files are checked when loaded.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise corrupt_file_error(path, f"{size} bytes, shorter than the 8-byte header length")
            header_bytes = int.from_bytes(prefix, "little")
            if header_bytes > size - 8:
                raise corrupt_file_error(path, f"header claims {header_bytes} bytes but the file has {size}")
            header = json.loads(handle.read(header_bytes))
        data_end = max(
            (int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"), default=0
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise corrupt_file_error(path, f"unreadable header: {err}") from err
    if 8 + header_bytes + data_end != size:
        raise corrupt_file_error(path, f"tensors end at byte {8 + header_bytes + data_end} but the file has {size}")


def sha256_of_files(files: list[Path], sidecar: Path | None = None) -> str:
    """Hex sha256 over the files' bytes, concatenated in the order given (callers pass them sorted).

    Args:
        files: the weight files.
        sidecar: JSON file remembering digests by (real path, size, mtime); None to always hash.
    """
    real_paths = [Path(f).resolve() for f in files]
    key = ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in real_paths)
    if sidecar is not None and (known := _read_sidecar(sidecar).get(key)):
        return known
    digest = hashlib.sha256()
    for path in real_paths:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                digest.update(chunk)
    hex_digest = digest.hexdigest()
    if sidecar is not None:
        _remember(sidecar, key, hex_digest)
    return hex_digest


def _read_sidecar(sidecar: Path) -> dict[str, str]:
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}


def _remember(sidecar: Path, key: str, hex_digest: str) -> None:
    """Add one digest; read-merge-replace under a file lock so concurrent workers keep each other's entries."""
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{sidecar}.lock"):
            entries = _read_sidecar(sidecar)
            entries[key] = hex_digest
            handle, tmp_name = tempfile.mkstemp(dir=sidecar.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as tmp:
                json.dump(entries, tmp, indent=0)
            os.replace(tmp_name, sidecar)
    except OSError as err:  # a read-only checkpoint folder only costs re-hashing next time
        log.debug("not remembering sha256 in %s: %s", sidecar, err)
