"""The processes of the ``Procfile`` run as a group, on a chosen port and environment: what the
end-to-end tests, the load benchmark and the fault drills start, exactly as ``make run`` does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcfileStack:
    """Start, kill and restart the Procfile's processes; each in its own process group."""

    def __init__(self, log_dir: Path, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_dir = log_dir
        # The processes get this process's environment with the given changes, as `make run`'s do.
        self.env = dict(
            os.environ,
            **env,
            ITG_PORT=str(self.port),
            PYTHONUNBUFFERED="1",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str | None = None) -> None:
        for process_name in [name] if name else list(procfile()):
            log = open(self.log_dir / f"{process_name}.log", "ab")
            # exec: the shell becomes the program, so signals and waits reach the program itself.
            self.processes[process_name] = subprocess.Popen(
                f"exec {procfile()[process_name]}", shell=True, cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def kill(self, name: str, sig: int = signal.SIGKILL, grace_s: float = 10) -> None:
        """Signal the process group; one that outlives the grace period is killed outright."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        # Anything the program started in its group (uvicorn's workers) goes with it.
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def pids(self) -> dict[str, list[int]]:
        """The pids of each process group (the shell and the program it runs)."""
        import psutil

        found: dict[str, list[int]] = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(process.pid)
                found[name] = [process.pid] + [child.pid for child in parent.children(recursive=True)]
        return found

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.logs(name)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base_url + "/", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("the stack never became healthy:\n" + "\n".join(self.logs(n) for n in self.processes))

    def logs(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)

    def register(self, name: str, role: str) -> str:
        response = requests.post(self.base_url + "/auth/register", json={"team_name": name, "role": role}, timeout=10)
        assert response.status_code == 201, response.text
        return str(response.json()["api_key"])
