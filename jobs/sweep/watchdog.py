"""Kill what is left of a local Ray once the sweep driver that started it is gone, however it ended.

Run by `jobs.sweep.driver.start_watchdog` as `python watchdog.py SESSION`, with a pipe from the driver on
stdin. Ray's GCS and raylet die with the driver (Ray starts them with PR_SET_PDEATHSIG), but after a
kill -9 of the driver the raylet's dashboard and runtime-env agents (~210 MB) live on for about a minute,
until their report to the dead GCS times out (measured with Ray 2.60). Every process of the sweep's Ray
inherits `SESSION_ENV=SESSION` from the driver; when the pipe closes (the driver exited), this kills the
processes that still carry it, and exits.

Standard library only: it must start fast and import nothing of the project.
"""

from __future__ import annotations

import os
import signal
import sys
import time

SESSION_ENV = "DYNAMICS_SWEEP_SESSION"


def session_processes(session: str) -> list[int]:
    """Pids of the processes whose environment holds SESSION_ENV=session (this one excluded)."""
    marker = f"{SESSION_ENV}={session}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if marker in environ.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def main(session: str, settle_s: float = 10.0) -> None:
    # Ctrl-C and a job scheduler's SIGTERM reach the whole process group: outlive the driver to clean up after it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):  # returns b"" once the driver's end of the pipe is closed
        pass
    # The pipe closes while the driver exits, a moment before the kernel signals Ray's fate-shared processes,
    # which may still be starting others: look again until none is left (or `settle_s` passes).
    deadline = time.monotonic() + settle_s
    while (left := session_processes(session)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


if __name__ == "__main__":
    main(sys.argv[1])
