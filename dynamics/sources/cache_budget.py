"""A size bound on a Hugging Face cache that several worker processes share.

State lives in `<cache_dir>/.dynamics/`:
- `in-use/<commit>.<pid>`: process `pid` is using revision `commit`. Created before the download starts,
  removed on release. A marker whose process is gone is stale and ignored (and cleaned up), so a crashed
  worker never pins a revision for ever. Checked with `os.kill(pid, 0)`, so the cache must belong to one
  machine (file locks on network file systems are unreliable anyway).
- `released/<commit>`: touched on release; its mtime orders eviction (least recently released first).
  Only revisions released through this module are ever evicted; anything else in the cache is left alone.
- `lock`: a `filelock.FileLock` held around every marker change and every eviction, so a revision is
  never deleted between another process deciding to use it and creating its marker.

Eviction goes through huggingface_hub's own `scan_cache_dir(...).delete_revisions(commit).execute()`,
which keeps blobs that other cached revisions share. The bound covers the whole cache folder; when what
is left is in use or not ours, the cache stays over the bound and a warning says so.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from filelock import FileLock
from huggingface_hub import scan_cache_dir

from dynamics.errors import InputError

log = logging.getLogger(__name__)


class SharedCacheBudget:
    """In-use markers and least-recently-released eviction for one cache folder.

    Args:
        cache_dir: the Hugging Face hub cache folder (the one holding `models--ORG--NAME`).
        max_bytes: evict released revisions until the cache is at most this big; None never evicts
            (markers are still written, so processes that do have a bound leave this one's revisions be).
    """

    def __init__(self, cache_dir: Path, max_bytes: int | None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise InputError(f"max_cache_bytes must be non-negative (got {max_bytes})")
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self._state = self.cache_dir / ".dynamics"
        self._in_use = self._state / "in-use"
        self._released = self._state / "released"
        self._holds: Counter[str] = Counter()  # this process's fetches not yet released, per commit
        self._in_use.mkdir(parents=True, exist_ok=True)
        self._released.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self._state / "lock")

    def acquire(self, commit: str) -> None:
        """Mark `commit` as in use by this process, then evict others if the cache is over the bound."""
        with self._lock:
            self._holds[commit] += 1
            self._marker(commit).touch()
            self._evict_locked()

    def release(self, commit: str) -> None:
        """Drop one hold on `commit`; once none is left it becomes evictable, and eviction runs."""
        with self._lock:
            if self._holds[commit] == 0:
                return
            self._holds[commit] -= 1
            if self._holds[commit] == 0:
                del self._holds[commit]
                self._marker(commit).unlink(missing_ok=True)
                (self._released / commit).touch()
            self._evict_locked()

    def forget(self, commit: str) -> None:
        """Drop one hold after a failed fetch, without marking the revision released."""
        with self._lock:
            self._holds[commit] -= 1
            if self._holds[commit] <= 0:
                del self._holds[commit]
                self._marker(commit).unlink(missing_ok=True)

    def _marker(self, commit: str) -> Path:
        return self._in_use / f"{commit}.{os.getpid()}"

    def _live_commits(self) -> set[str]:
        live = set()
        for marker in self._in_use.iterdir():
            commit, _, pid = marker.name.rpartition(".")
            if pid.isdigit() and _process_alive(int(pid)):
                live.add(commit)
            else:
                marker.unlink(missing_ok=True)
        return live

    def _evict_locked(self) -> None:
        if self.max_bytes is None:
            return
        while True:
            info = scan_cache_dir(self.cache_dir)
            if info.size_on_disk <= self.max_bytes:
                return
            victim = self._oldest_evictable({r.commit_hash for repo in info.repos for r in repo.revisions})
            if victim is None:
                log.warning(
                    "cache %s holds %d bytes, over the %d-byte bound, but every remaining revision is in use "
                    "or was not fetched through dynamics",
                    self.cache_dir,
                    info.size_on_disk,
                    self.max_bytes,
                )
                return
            strategy = info.delete_revisions(victim)
            log.info("evicting %s from %s (frees %s)", victim, self.cache_dir, strategy.expected_freed_size_str)
            strategy.execute()
            (self._released / victim).unlink(missing_ok=True)

    def _oldest_evictable(self, cached: set[str]) -> str | None:
        live = self._live_commits()
        released = []
        for marker in self._released.iterdir():
            if marker.name not in cached:
                marker.unlink(missing_ok=True)  # deleted by someone else (e.g. `hf cache rm`)
            elif marker.name not in live:
                released.append((marker.stat().st_mtime_ns, marker.name))
        return min(released)[1] if released else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
