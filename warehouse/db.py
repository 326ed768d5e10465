"""Opening the warehouse file: short-lived connections, the schema, and one-line errors.

DuckDB lets one read-write process *or* any number of read-only processes hold a database file, never
both at once (duckdb.org/docs/current/connect/concurrency). So nobody keeps the file open: the single
writer (the sweep driver) opens it, writes one checkpoint in one transaction and closes it; readers
open it read-only for one query and close it. Whoever finds the file locked retries with jittered
exponential backoff until `lock_timeout_s` and then raises `WarehouseBusyError`, saying so on the log
after `LOCK_NOTICE_S`.

Read-only connections reach nothing but the warehouse file (`READ_ONLY_CONFIG`), so SQL a reader runs
(`dynamics sql`) cannot attach, copy to, export to or read any other file, and cannot lift that with SET.
`check_intact` refuses a file shorter than its own metadata says (a copy or download cut short).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import duckdb

from dynamics.errors import AccessError, InputError, MissingInputError, NotAFolderError, StorageError, UserError, first_line

SCHEMA_VERSION = 2  # the version schema.sql inserts; a test keeps the two equal
LOCK_TIMEOUT_S = 60.0
LOCK_NOTICE_S = 2.0  # a wait on another process's lock longer than this is logged (once), so nobody waits in silence
_FIRST_BACKOFF_S = 0.02
log = logging.getLogger(__name__)
# the writer retries more eagerly than readers: it needs a moment when no reader holds the file,
# while a reader only needs the writer's single transaction to end
_MAX_BACKOFF_S = {"read": 0.25, "write": 0.05}
# Every read-only connection: no file but the warehouse (ATTACH, COPY … TO, EXPORT, read_csv, glob, INSTALL
# all refused), no extension loaded on demand, no spill folder (the one other writable path), and the
# configuration locked so no SET or RESET lifts any of it. The database's own files are DuckDB's
# `allowed_paths`. duckdb.org/docs/stable/operations_manual/securing_duckdb/overview
READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "temp_directory": "",
    "lock_configuration": True,
}
# A DuckDB file is three 4 KiB headers followed by fixed-size blocks numbered from 0 (DuckDB's storage
# format, "Storage" in its internals docs); a file shorter than its highest block in use was cut short.
_FILE_HEADERS_BYTES = 3 * 4096


class WarehouseBusyError(UserError, TimeoutError):
    """Another process kept the warehouse file locked for longer than the caller would wait."""


def schema_sql() -> list[str]:
    """The schema script followed by every `sql/*.sql` (views and macros), in the order applied."""
    package = resources.files("warehouse")
    scripts = [package.joinpath("schema.sql").read_text()]
    views = sorted((p for p in package.joinpath("sql").iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return scripts + [p.read_text() for p in views]


@contextmanager
def connect_write(path: str | Path, lock_timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection with the schema applied, closed on exit. Creates the file if needed.

    Keep the block short (one checkpoint's transaction): while it is open, no reader can open the file.
    """
    path = Path(path)
    _check_location(path)
    con = _open(path, read_only=False, lock_timeout_s=lock_timeout_s)
    try:
        _check_version(con, path)
        _apply_schema(con, path)
        yield con
    finally:
        con.close()


@contextmanager
def connect_read(path: str | Path, lock_timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection, closed on exit. Raises FileNotFoundError when there is no warehouse yet."""
    path = Path(path)
    _require_file(path)
    con = _open(path, read_only=True, lock_timeout_s=lock_timeout_s)
    try:
        if _is_outdated(con, path):
            con.close()
            _upgrade(path, lock_timeout_s)
            con = _open(path, read_only=True, lock_timeout_s=lock_timeout_s)
        yield con
    finally:
        con.close()


def _is_outdated(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """Whether the file's schema, views or macros are older than this package's (newer ones raise)."""
    _check_version(con, path)
    version, digest = _stored_schema(con)
    return version is not None and digest != _scripts_digest(schema_sql())


def _upgrade(path: Path, lock_timeout_s: float) -> None:
    """Bring an older warehouse's tables, views and macros up to date (one short write), so readers see the
    analyses this package defines; a file that cannot be written is read with the views it has."""
    try:
        with connect_write(path, lock_timeout_s):
            log.info("upgraded the schema, views and macros of %s", path)
    except (PermissionError, StorageError, InputError) as err:
        log.warning("%s was written by another version and cannot be upgraded (%s); its own views are used", path, err)


def translate_error(path: Path, err: duckdb.Error) -> Exception:
    """A one-line user-facing exception for a DuckDB error raised while using the file at `path`."""
    message = first_line(err)
    lowered = message.lower()
    if "no space left" in lowered or "file too large" in lowered:
        return StorageError(errno.ENOSPC, f"could not write the warehouse {path}: {message}; free disk space "
                       "(or move the warehouse) and rerun — nothing from the failed write was kept")
    if "permission denied" in lowered or "read-only file system" in lowered or "operation not permitted" in lowered:
        return AccessError(f"cannot write the warehouse {path} ({message}); make the file and its folder "
                               "writable or pass another --warehouse path")
    if "not a valid duckdb database file" in lowered:
        return InputError(f"{path} is not a DuckDB warehouse file; pass a warehouse written by `dynamics sweep` "
                          "or a path that does not exist yet")
    if "could not read enough bytes" in lowered or "corrupt" in lowered or "checksum" in lowered:
        return damaged_error(path, message)
    if "different configuration" in lowered:
        return InputError(f"{path} is already open in this process in another mode; close that connection "
                          "first (warehouse connections are meant to be short-lived)")
    return InputError(f"warehouse {path}: {message}")


def damaged_error(path: Path, detail: str) -> InputError:
    """The one-line error for a warehouse file that is cut short or corrupt."""
    return InputError(f"warehouse {path} is damaged ({detail}); it was probably cut short by a copy, a download or a "
                      "full disk. Restore it from a backup, or move it aside and rerun the sweep into a new --warehouse")


def require_warehouse(path: Path) -> None:
    """For commands that read a warehouse: refuse, in one line, a path with no warehouse file or a damaged one."""
    _require_file(path)
    check_intact(path)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise MissingInputError(f"no warehouse at {path}; check --warehouse or create it with `dynamics sweep`")
    if path.is_dir():
        raise InputError(f"warehouse path {path} is a directory; pass the .duckdb file inside it")


def check_intact(path: str | Path, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Refuse (`damaged_error`) a warehouse file shorter than the blocks its tables and metadata use.

    DuckDB opens such a file and counts its rows from metadata alone; only reading the lost blocks fails,
    after a sweep may already have written into it. This reads the catalogue's block list, not the data:
    ~40 ms for a 7 MB warehouse (a full read of every table also catches it, at the cost of reading the file).
    """
    path = Path(path)
    if not path.is_file():
        return
    con = _open(path, read_only=True, lock_timeout_s=lock_timeout_s)
    try:
        needed_bytes = _FILE_HEADERS_BYTES + (_highest_block(con) + 1) * _block_size(con)
    except duckdb.Error as err:
        raise translate_error(path, err) from err
    finally:
        con.close()
    size = path.stat().st_size
    if size < needed_bytes:
        raise damaged_error(path, f"the file has {size:,} bytes but its tables need {needed_bytes:,}")


def _block_size(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
                       ).fetchone()[0]


def _highest_block(con: duckdb.DuckDBPyConnection) -> int:
    """The highest block id the file's metadata and table data point to (-1 for an empty file)."""
    highest = con.execute("SELECT coalesce(max(block_id), -1) FROM pragma_metadata_info()").fetchone()[0]
    tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                         "AND schema_name = 'main'").fetchall()
    for (table,) in tables:  # names from the catalogue, not from input
        used = con.execute(
            "SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1))) "
            f"FROM pragma_storage_info('{table}') WHERE persistent"
        ).fetchone()[0]
        highest = max(highest, -1 if used is None else used)
    return highest


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open: a COMMIT that failed (e.g. disk full) has already ended it."""
    try:
        con.rollback()
    except duckdb.TransactionException:
        pass


def check_write_target(path: Path) -> None:
    """What can be known of a warehouse path before a sweep's slow setup: its folder exists, it is not a folder,
    and a file already there is not damaged (whether it can be written shows when it is opened)."""
    _check_location(path)
    check_intact(path)


def _check_location(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"warehouse path {path} is a directory; pass a file path such as {path / 'warehouse.duckdb'}")
    parent = path.parent
    if not parent.exists():
        raise MissingInputError(
            f"the folder of warehouse {path} does not exist; create {parent} first or pass another path"
        )
    if not parent.is_dir():
        raise NotAFolderError(f"the parent of warehouse {path} is not a folder ({parent}); pass another path")


def _is_lock_conflict(err: duckdb.Error) -> bool:
    return "could not set lock" in str(err).lower()


def _open(path: Path, read_only: bool, lock_timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Connect, retrying while another process holds a conflicting lock on the file."""
    started = time.monotonic()
    deadline = started + lock_timeout_s
    backoff_s = _FIRST_BACKOFF_S
    noticed = False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=READ_ONLY_CONFIG if read_only else {})
        except duckdb.Error as err:
            if not _is_lock_conflict(err):
                raise translate_error(path, err) from err
            if not noticed and time.monotonic() - started > LOCK_NOTICE_S:
                log.warning("waiting for the warehouse %s: another process holds it (a sweep only while writing one "
                            "checkpoint); giving up after %g s", path, lock_timeout_s)
                noticed = True
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise WarehouseBusyError(
                    f"another process has held the warehouse {path} for over {lock_timeout_s:g} s; wait for it to "
                    "finish (a sweep only holds it while writing one checkpoint) or stop it"
                ) from err
            # jitter keeps a reader loop and the writer from retrying in lockstep
            time.sleep(min(remaining_s, backoff_s * random.uniform(0.5, 1.0)))
            backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S['read' if read_only else 'write'])


def _stored_schema(con: duckdb.DuckDBPyConnection) -> tuple[int | None, str | None]:
    """(version, sql_sha256) recorded in the file, or (None, None) for a file without the schema yet."""
    try:
        return con.execute("SELECT max(version), arg_max(sql_sha256, version) FROM schema_version").fetchall()[0]
    except duckdb.CatalogException:
        return None, None


def _scripts_digest(scripts: list[str]) -> str:
    return hashlib.sha256("\n".join(scripts).encode()).hexdigest()


def _check_version(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version, _ = _stored_schema(con)
    if version is not None and version > SCHEMA_VERSION:
        raise InputError(
            f"warehouse {path} has schema version {version} but this package reads version {SCHEMA_VERSION}; "
            "upgrade the training-dynamics package"
        )


def _apply_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Create missing tables and (re)create the views and macros, all in one transaction.

    Skipped when the scripts are byte-identical to those last applied: re-running them costs ~70 ms
    of the writer's lock time per checkpoint.
    """
    scripts = schema_sql()
    digest = _scripts_digest(scripts)
    if _stored_schema(con)[1] == digest:
        return
    con.begin()
    try:
        for script in scripts:
            con.execute(script)
        con.execute("UPDATE schema_version SET sql_sha256 = ? WHERE version = ?", [digest, SCHEMA_VERSION])
        con.commit()
    except duckdb.Error as err:
        rollback(con)
        raise translate_error(path, err) from err
