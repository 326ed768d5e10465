"""Held-out text for the ICL token-loss score: a local file the user names, as rows of token ids.

Accepted files: `.txt` (one document), `.jsonl` (one JSON object per line with a "text" field),
`.parquet` (a "text" column) — each document prefixed with the BOS text and joined, then cut into rows
that start with BOS, like TransformerLens' `tokenize_and_concatenate` does for the reference — or
`.safetensors` holding ready-made rows under the key "tokens" (what the toy suite saves).
How the rows are used: docs/methods.md, "Held-out rows".
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from dynamics.errors import InputError, MissingInputError

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")


def check_heldout_file(path: Path, row_tokens: int) -> None:
    """Fail early, before any scoring, on a held-out file that cannot serve rows of `row_tokens`: missing, of
    another kind, unreadable (not UTF-8, not Parquet), without a 'text' field, or with no text at all.

    Whether the text is long enough depends on the tokenizer: `load_heldout_tokens` checks that.
    """
    _read_checked(Path(path), row_tokens)


def load_heldout_tokens(path: Path, tokenizer, row_tokens: int, max_rows: int = 1000) -> Tensor:
    """(rows, row_tokens) ids from `path`, at most `max_rows` rows."""
    path = Path(path)
    content = _read_checked(path, row_tokens)
    rows = content if isinstance(content, Tensor) else _rows_from_documents(content, tokenizer, row_tokens, max_rows, path)
    return rows[:max_rows, :row_tokens].long()


def _read_checked(path: Path, row_tokens: int) -> Tensor | list[str]:
    """The file's token rows (.safetensors) or documents, read once; the checks of `check_heldout_file`."""
    if not path.is_file():
        raise MissingInputError(f"held-out text {path} does not exist; pass a .txt, .jsonl or .parquet file")
    if path.suffix == ".safetensors":
        return _token_rows(path, row_tokens)
    if path.suffix not in TEXT_SUFFIXES:
        raise InputError(f"held-out file {path} has suffix {path.suffix!r}; "
                         f"use one of {', '.join(TEXT_SUFFIXES)} or .safetensors")
    documents = _read_documents(path)
    if not any(document.strip() for document in documents):
        raise InputError(f"held-out text {path} holds no text; pass a file with at least a few thousand words")
    return documents


def _token_rows(path: Path, row_tokens: int) -> Tensor:
    from safetensors.torch import load_file

    try:
        rows = load_file(path).get("tokens")
    except Exception as err:  # safetensors raises its own SafetensorError for a file that is not one
        raise InputError(f"held-out file {path} is not a readable safetensors file ({err}); save token rows with "
                         "safetensors.torch.save_file") from err
    if rows is None or rows.ndim != 2:
        raise InputError(f"{path} has no 2-d 'tokens' tensor; save token rows under the key 'tokens'")
    if rows.shape[1] < row_tokens:
        raise InputError(
            f"held-out rows in {path} have {rows.shape[1]} tokens but the token-loss score needs {row_tokens}; "
            "lower --token-loss-positions or pass longer rows"
        )
    return rows


def _read_documents(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return _parquet_documents(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"held-out text {path} is not UTF-8 text ({err.reason} at byte {err.start}); pass a UTF-8 "
                         f"{path.suffix} file") from err
    if path.suffix == ".txt":
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{path} line {number} is not a JSON object with a 'text' field ({err})") from err
        if not isinstance(value, str):
            raise InputError(f"{path} line {number}: 'text' is {json.dumps(value)[:40]}, not a string")
        documents.append(value)
    return documents


def _parquet_documents(path: Path) -> list[str]:
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # polars raises its own error types for a file that is not Parquet
        raise InputError(f"held-out file {path} is not a readable Parquet file ({str(err).splitlines()[0]})") from err
    if "text" not in frame.columns:
        raise InputError(f"{path} has no 'text' column (columns: {', '.join(frame.columns)})")
    if frame.schema["text"] != pl.Utf8:
        raise InputError(f"{path}: column 'text' holds {frame.schema['text']}, not strings")
    return [t for t in frame["text"].to_list() if t]


def _rows_from_documents(documents: list[str], tokenizer, row_tokens: int, max_rows: int, path: Path) -> Tensor:
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    body = row_tokens - 1  # every row starts with BOS
    ids: list[int] = []
    for document in documents:
        ids += [bos_id, *tokenizer(document).input_ids]
        if len(ids) >= body * max_rows:
            break
    n_rows = min(max_rows, len(ids) // body)
    if n_rows == 0:
        raise InputError(f"held-out text {path} has {len(ids)} tokens, fewer than one row of {row_tokens}; pass more "
                         "text (or lower --token-loss-positions)")
    chunks = torch.tensor(ids[: n_rows * body], dtype=torch.long).view(n_rows, body)
    return torch.cat([torch.full((n_rows, 1), bos_id, dtype=torch.long), chunks], dim=1)
