"""Kill what is left of a local Ray once the sweep driver that started it is gone, however it ended.

Run by `jobs.sweep.driver.start_watchdog` as `python watchdog.py SESSION`, with a pipe from the driver on
stdin. Ray's GCS and raylet die with the driver (Ray starts them with PR_SET_PDEATHSIG), but after a
kill -9 of the driver the raylet's dashboard and runtime-env agents (~210 MB) live on for about a minute,
until their report to the dead GCS times out (measured with Ray 2.60). While the driver lives, this
notes every process below it each second (the agents are the raylet's children, orphaned once it dies);
when the pipe closes (the driver exited), it kills those still running, and any process whose environment
holds `SESSION_ENV=SESSION` (the driver's other descendants inherit it; Ray's retitled processes may
have it overwritten, hence the process tree as well), then exits.

Standard library only: it must start fast and import nothing of the project.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

SESSION_ENV = "DYNAMICS_SWEEP_SESSION"


def session_processes(session: str) -> set[int]:
    """Pids of the processes whose environment holds SESSION_ENV=session (this one excluded)."""
    marker = f"{SESSION_ENV}={session}".encode()
    found = set()
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if marker in environ.read().split(b"\0"):
                    found.add(pid)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def descendants(root: int) -> dict[int, int]:
    """pid → start time (clock ticks since boot) of every process below `root`."""
    stats = {pid: stat for pid in _pids() if (stat := _stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    found, stack = {}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = stats[child][1]
            stack.append(child)
    return found


def main(session: str, settle_s: float = 10.0, every_s: float = 1.0) -> None:
    # Ctrl-C and a job scheduler's SIGTERM reach the whole process group: outlive the driver to clean up after it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    driver = os.getppid()
    seen: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([0], [], [], every_s)
        if readable and not os.read(0, 4096):  # b"": the driver's end of the pipe is closed
            break
        seen.update(descendants(driver))
    # The pipe closes while the driver exits, a moment before the kernel signals Ray's fate-shared processes,
    # which may still be starting others: look again until none is left (or `settle_s` passes).
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        left = {pid for pid, started in seen.items() if (stat := _stat(pid)) is not None and stat[1] == started}
        left |= session_processes(session)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != os.getpid()]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) from /proc/<pid>/stat; None when the process is gone (or dead, a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after 'pid (comm) ': state, ppid, …; starttime is the 22nd field
    return None if fields[0] in "ZX" else (int(fields[1]), int(fields[19]))


if __name__ == "__main__":
    main(sys.argv[1])
