"""Find a sweep's own processes (the driver, Ray's daemons, the scoring actors) through /proc.

Each sweep in these tests runs with its own DYNAMICS_HOME; Ray's processes inherit the driver's
environment, so that variable tells one sweep's processes from any other Ray on the machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path


def sweep_processes(dynamics_home: Path) -> dict[int, str]:
    """pid -> process title (Ray names actors 'ray::ScoringWorker', 'ray::ScoringWorker.score' while scoring)."""
    marker = f"DYNAMICS_HOME={dynamics_home}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if marker in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                found[int(name)] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
    return found


def stop_processes(dynamics_home: Path, grace_s: float = 10.0) -> None:
    """Stop one test's Ray: SIGTERM its processes (found by DYNAMICS_HOME), then SIGKILL those left after
    `grace_s`. Never `ray stop`, which stops every Ray on the machine, other users' sweeps included."""
    for pid in sweep_processes(dynamics_home):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := sweep_processes(dynamics_home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


_SS_LINE = re.compile(r"LISTEN\s+\d+\s+\d+\s+(\S+):(\d+)\s+.*?users:\((.*)\)")
_PID = re.compile(r'\("([^"]*)",pid=(\d+)')


def tcp_listeners(pids: set[int]) -> list[tuple[str, int, str, int]]:
    """(address, port, process name, pid) of every TCP socket the given processes listen on (`ss -ltnp`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    listeners = []
    for line in out.splitlines():
        match = _SS_LINE.search(line)
        if not match:
            continue
        address, port, users = match.groups()
        for name, pid in _PID.findall(users):
            if int(pid) in pids:
                listeners.append((address.strip("[]"), int(port), name, int(pid)))
    return listeners


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "localhost", "::ffff:127.0.0.1")
