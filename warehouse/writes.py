"""Idempotent writes: each call opens the warehouse, writes in one transaction, and closes it.

A checkpoint is keyed by (model, step, settings_hash). Writing it again replaces every row it had in
`checkpoints`, `head_scores`, `head_task_scores` and `checkpoint_metrics`, so a retried or re-scored
checkpoint never leaves two copies, and a reader sees either all of a checkpoint's rows with status
'ok' or none of them. Score frames come from `dynamics.rows` (columns model, revision, step,
weights_sha256, dtype, attn_impl, settings_hash, code_version, layer, head, metric, value, flag[, task]).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import duckdb
import polars as pl

from dynamics.errors import InputError, UnknownNameError
from warehouse.db import LOCK_TIMEOUT_S, connect_read, connect_write, rollback, translate_error

log = logging.getLogger(__name__)

KEY_COLUMNS = ("model", "step", "settings_hash")
SCORE_TABLES = ("head_scores", "head_task_scores", "checkpoint_metrics", "ablations")
# filled from the checkpoint dict when a score frame lacks them
PROVENANCE_COLUMNS = ("revision", "weights_sha256", "dtype", "attn_impl", "code_version", "run_id")
CHECKPOINT_FIELDS = (
    *KEY_COLUMNS, "revision", "tokens", "weights_sha256", "commit", "dtype", "attn_impl", "settings",
    "code_version", "run_id", "load_s", "score_s",
)
# each table's natural key beyond the checkpoint's; a frame may hold each combination once
_ROW_KEYS = {
    "head_scores": ("layer", "head", "metric"),
    "head_task_scores": ("task", "layer", "head", "metric"),
    "checkpoint_metrics": ("metric",),
    "ablations": ("ranking", "fraction", "exclusion", "method", "task", "metric"),
}
_REQUIRED_COLUMNS = {
    "head_scores": ("layer", "head", "metric", "value", "flag"),
    "head_task_scores": ("task", "layer", "head", "metric", "value", "flag"),
    "checkpoint_metrics": ("metric", "value", "flag"),
    "prompts": ("task", "kind", "idx", "prompt"),
    "ablations": ("ranking", "fraction", "exclusion", "method", "task", "metric", "value", "flag"),
}
_OPTIONAL_COLUMNS = {"ablations": ("n_ablated", "heads"), "head_scores": ("stderr",), "head_task_scores": ("stderr",)}
_LIBRARIES = ("torch", "transformers", "huggingface_hub", "safetensors", "duckdb", "polars", "ray", "training-dynamics")


def write_checkpoint(
    path: str | Path,
    checkpoint: dict,
    head_scores: pl.DataFrame,
    head_task_scores: pl.DataFrame | None = None,
    checkpoint_metrics: pl.DataFrame | None = None,
    prompts: pl.DataFrame | None = None,
    ablations: pl.DataFrame | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> None:
    """Store one scored checkpoint (status 'ok') and all its rows atomically, replacing an earlier copy.

    Args:
        checkpoint: the `checkpoints` columns of this checkpoint; model, step and settings_hash are
            required, the others (revision, tokens, weights_sha256, commit, dtype, attn_impl, settings
            (a dict), code_version, run_id, load_s, score_s) optional. Score frames lacking a
            provenance column get it from here.
        prompts: optional (task, kind, idx, prompt[, target]) rows; stored once per settings_hash.
        ablations: optional head-ablation results of this checkpoint (the `ablations` table's columns).

    Example: `write_checkpoint(db, {"model": m, "step": 1000, "settings_hash": h, "run_id": r}, rows)`
    """
    row = _checkpoint_row(checkpoint)
    frames = {
        table: _prepare_scores(table, frame, row)
        for table, frame in zip(SCORE_TABLES, (head_scores, head_task_scores, checkpoint_metrics, ablations))
        if frame is not None
    }
    prompt_frame = _prepare_prompts(prompts, row) if prompts is not None else None
    with connect_write(path, lock_timeout_s) as con, _transaction(con, Path(path)):
        _replace_checkpoint(con, {**row, "status": "ok"})
        for table, frame in frames.items():
            _insert_frame(con, table, frame)
        if prompt_frame is not None:
            _insert_frame(con, "prompts", prompt_frame,
                          on_conflict="ON CONFLICT DO UPDATE SET prompt = excluded.prompt, target = excluded.target")
    log.info("wrote %s step %d (%s): %s", row["model"], row["step"], row["settings_hash"],
             ", ".join(f"{len(f)} {t}" for t, f in frames.items()))


def record_failure(path: str | Path, checkpoint: dict, error: str, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Mark a checkpoint as failed with its error text; any rows of an earlier attempt are removed."""
    if not error or not error.strip():
        raise InputError("record_failure needs the error text; pass the exception message or traceback")
    row = _checkpoint_row(checkpoint)
    with connect_write(path, lock_timeout_s) as con, _transaction(con, Path(path)):
        _replace_checkpoint(con, {**row, "status": "failed", "error": error})


def record_duplicate(
    path: str | Path, checkpoint: dict, duplicate_of: int, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> None:
    """Mark a checkpoint whose weights equal those of step `duplicate_of` of the same model; it gets no rows."""
    row = _checkpoint_row(checkpoint)
    if isinstance(duplicate_of, bool) or not isinstance(duplicate_of, int) or duplicate_of == row["step"]:
        raise InputError(f"duplicate_of must be another step of {row['model']} (got {duplicate_of!r})")
    with connect_write(path, lock_timeout_s) as con, _transaction(con, Path(path)):
        _replace_checkpoint(con, {**row, "status": "duplicate", "duplicate_of": duplicate_of})


def completed_checkpoints(
    path: str | Path, model: str, settings_hash: str, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> set[int]:
    """Steps of `model` already done with these settings (status 'ok' or 'duplicate'); failed ones are redone.

    Returns an empty set when the warehouse does not exist yet.
    """
    if not Path(path).exists():
        return set()
    with connect_read(path, lock_timeout_s) as con:
        rows = con.execute(
            "SELECT step FROM checkpoints WHERE model = ? AND settings_hash = ? AND status IN ('ok', 'duplicate')",
            [model, settings_hash],
        ).fetchall()
    return {step for (step,) in rows}


def upsert_model(
    path: str | Path,
    model: str,
    family: str,
    source: str,
    n_layers: int,
    n_heads: int,
    d_model: int,
    d_head: int,
    n_params: int | None = None,
    vocab_size: int | None = None,
    config: dict | None = None,
    suite: str | None = None,
    seed: int | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> None:
    """Insert or replace the `models` row of `model` (source 'hub' or 'local'), with the suite it is one seed of."""
    if source not in ("hub", "local"):
        raise InputError(f"model source must be 'hub' or 'local' (got {source!r})")
    shape = {"n_layers": n_layers, "n_heads": n_heads, "d_model": d_model, "d_head": d_head}
    bad = [f"{name}={value!r}" for name, value in shape.items() if not isinstance(value, int) or value < 1]
    if bad:
        raise InputError(f"model {model} needs positive integer sizes (got {', '.join(bad)})")
    row = {"model": model, "family": family, "source": source, **shape, "n_params": n_params,
           "vocab_size": vocab_size, "config": _to_json(config), "updated_at": _utc_now(), "suite": suite, "seed": seed}
    with connect_write(path, lock_timeout_s) as con, _transaction(con, Path(path)):
        _insert_row(con, "models", row, verb="INSERT OR REPLACE")


def start_run(
    path: str | Path,
    config: dict,
    code_version: str,
    run_id: str | None = None,
    library_versions: dict[str, str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    host: str | None = None,
    command: str | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> str:
    """Record a run (its full config and environment) and return its run_id (a new one unless given).

    `library_versions` defaults to the installed versions of the libraries a score depends on.
    """
    run_id = run_id or f"{_utc_now():%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    row = {
        "run_id": run_id, "started_at": _utc_now(), "finished_at": None, "status": "running",
        "config": _to_json(config), "code_version": code_version,
        "library_versions": _to_json(library_versions if library_versions is not None else installed_versions()),
        "device": device, "dtype": dtype, "host": host, "command": command,
    }
    with connect_write(path, lock_timeout_s) as con, _transaction(con, Path(path)):
        _insert_row(con, "runs", row, verb="INSERT OR REPLACE")
    return run_id


RUN_ENDINGS = ("finished", "failed", "interrupted")


def finish_run(path: str | Path, run_id: str, status: str = "finished", error: str | None = None,
               lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Stamp how and when a run ended: 'finished', 'failed' (with the error) or 'interrupted' (with what
    interrupted it: Ctrl-C, SIGTERM)."""
    if status not in RUN_ENDINGS:
        raise InputError(f"a run ends 'finished', 'failed' or 'interrupted' (got {status!r})")
    if (status == "failed" and not error) or (status == "finished" and error):
        raise InputError("a failed run needs its error text, and a finished one has none")
    with connect_write(path, lock_timeout_s) as con, _transaction(con, Path(path)):
        updated = con.execute(
            "UPDATE runs SET finished_at = ?, status = ?, error = ? WHERE run_id = ? RETURNING run_id",
            [_utc_now(), status, error, run_id],
        ).fetchall()
    if not updated:
        raise UnknownNameError(f"no run {run_id!r} in {path}; start it with start_run first")


def installed_versions() -> dict[str, str]:
    """Installed versions of the libraries a score depends on (read from package metadata, not imported)."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _utc_now() -> datetime:
    """Naive UTC, the convention of every TIMESTAMP column in the warehouse."""
    return datetime.now(UTC).replace(tzinfo=None)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection, path: Path) -> Iterator[None]:
    """BEGIN … COMMIT; on any error ROLLBACK, so nothing of the failed write is kept."""
    con.begin()
    try:
        yield
        con.commit()
    except duckdb.Error as err:
        rollback(con)
        raise translate_error(path, err) from err
    except BaseException:
        rollback(con)
        raise


def _replace_checkpoint(con: duckdb.DuckDBPyConnection, row: dict) -> None:
    key = [row[column] for column in KEY_COLUMNS]
    for table in ("checkpoints", *SCORE_TABLES):
        con.execute(f"DELETE FROM {table} WHERE model = ? AND step = ? AND settings_hash = ?", key)
    _insert_row(con, "checkpoints", {**row, "scored_at": _utc_now()}, verb="INSERT")


def _insert_row(con: duckdb.DuckDBPyConnection, table: str, row: dict, verb: str) -> None:
    # identifiers are the fixed column names above, never user input; values are bound
    columns = ", ".join(f'"{column}"' for column in row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", list(row.values()))


def _insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, on_conflict: str = "") -> None:
    if frame.is_empty():
        return
    # no try/finally: after a failed insert the transaction is aborted and unregister would mask the
    # real error; the registration dies with the connection anyway
    con.register("incoming_rows", frame.to_arrow())
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows {on_conflict}")
    con.unregister("incoming_rows")


def _checkpoint_row(checkpoint: dict) -> dict:
    unknown = sorted(set(checkpoint) - set(CHECKPOINT_FIELDS))
    if unknown:
        raise InputError(f"checkpoint has unknown fields {unknown}; allowed: {', '.join(CHECKPOINT_FIELDS)}")
    missing = [field for field in KEY_COLUMNS if checkpoint.get(field) in (None, "")]
    if missing:
        raise InputError(f"checkpoint needs {', '.join(missing)} (got {checkpoint!r})")
    step = checkpoint["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"checkpoint step must be a non-negative integer (got {step!r})")
    row = dict(checkpoint)
    if "settings" in row:
        row["settings"] = _to_json(row["settings"])
    return row


def _prepare_scores(table: str, frame: pl.DataFrame, row: dict) -> pl.DataFrame:
    """Check a score frame against its checkpoint and add the provenance columns it lacks."""
    _check_columns(table, frame, (*KEY_COLUMNS, *_REQUIRED_COLUMNS[table]),
                   allowed=(*KEY_COLUMNS, *_REQUIRED_COLUMNS[table], *_OPTIONAL_COLUMNS.get(table, ()),
                            *PROVENANCE_COLUMNS))
    keys = frame.select(KEY_COLUMNS).unique().rows()
    expected = tuple(row[column] for column in KEY_COLUMNS)
    if any(key != expected for key in keys):
        raise InputError(f"{table} rows belong to {sorted(set(keys) - {expected})[:3]} but the checkpoint is "
                         f"{expected}; pass the rows of this checkpoint only")
    duplicated = int(frame.select(_ROW_KEYS[table]).is_duplicated().sum())
    if duplicated:
        raise InputError(f"{table} has {duplicated} rows sharing a ({', '.join(_ROW_KEYS[table])}) with another; "
                         "pass each score once")
    frame = frame.with_columns(pl.col("value").cast(pl.Float64), pl.col("flag").cast(pl.Utf8))
    values = frame["value"]
    bad_value = int((values.is_not_null() & ~values.is_finite()).sum())
    bad_flag = int((values.is_null() != (frame["flag"] == "non_finite").fill_null(False)).sum())
    if bad_value or bad_flag:
        raise InputError(f"{table} has {bad_value + bad_flag} rows whose value/flag disagree; a non-finite "
                         "score must be value null with flag 'non_finite' and a finite one flag null "
                         "(dynamics.rows does this)")
    missing = [column for column in PROVENANCE_COLUMNS if column not in frame.columns]
    return frame.with_columns(pl.lit(row.get(column), dtype=pl.Utf8).alias(column) for column in missing)


def _prepare_prompts(frame: pl.DataFrame, row: dict) -> pl.DataFrame:
    _check_columns("prompts", frame, _REQUIRED_COLUMNS["prompts"],
                   allowed=("settings_hash", *_REQUIRED_COLUMNS["prompts"], "target"))
    if "settings_hash" in frame.columns and frame["settings_hash"].ne(row["settings_hash"]).any():
        raise InputError(f"prompts carry a settings_hash other than the checkpoint's {row['settings_hash']!r}")
    frame = frame.with_columns(pl.lit(row["settings_hash"]).alias("settings_hash"))
    return frame if "target" in frame.columns else frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias("target"))


def _check_columns(table: str, frame: pl.DataFrame, required: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    if not isinstance(frame, pl.DataFrame):
        raise InputError(f"{table} must be a Polars DataFrame (got {type(frame).__name__})")
    missing = [column for column in required if column not in frame.columns]
    extra = [column for column in frame.columns if column not in allowed]
    if missing or extra:
        raise InputError(f"{table} frame has the wrong columns (missing {missing}, unknown {extra}); "
                         f"expected {', '.join(allowed)}")


def _to_json(value: object) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, default=str, allow_nan=False)
    except ValueError as err:  # NaN/inf: not valid JSON, and DuckDB's JSON type would reject it
        raise InputError(f"cannot store {str(value)[:80]}… as JSON: {err}; replace non-finite numbers") from err
