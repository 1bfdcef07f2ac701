"""``manage.py run_exchange``: migrate, seed the demo game and run every process of the Procfile.

Uses the embedded Redis unless REDIS_URL is set and SQLite unless DATABASE_URL is set.
Ctrl-C stops everything, the embedded Redis included.

A launcher, so it reads the environment itself: the processes it starts inherit it (with this
run's port and Redis URL), and ITG_PORT is the web server's own variable, which
``tradinggame.serve`` reads before Django is configured.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from infra import embedded_redis


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the whole exchange: web server and matching worker (Procfile), after migrate and seed_demo."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("ITG_PORT", "8000")))
        parser.add_argument("--no-seed", action="store_true", help="skip seed_demo")

    def handle(self, *args: Any, port: int, no_seed: bool, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database migrated: " + str(settings.DATABASES["default"]["NAME"]))
        if not no_seed:
            call_command("seed_demo", stdout=self.stdout)
        env = dict(os.environ, ITG_PORT=str(port), REDIS_URL=settings.REDIS_URL, PYTHONUNBUFFERED="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.stdout.write(f"redis: {settings.REDIS_URL}{' (embedded)' if settings.EMBEDDED_REDIS_DIR else ''}")
        self.stdout.write(f"exchange on http://127.0.0.1:{port}  (WebSocket ws://127.0.0.1:{port}/ws, admin /admin/)")
        procfile = Path(settings.BASE_DIR) / "Procfile"
        honcho = [sys.executable, "-m", "honcho", "start", "-f", str(procfile), "-d", str(settings.BASE_DIR)]
        # A SIGTERM ends the run like Ctrl-C does, so the embedded Redis is stopped either way.
        signal.signal(signal.SIGTERM, _interrupt)
        processes = subprocess.Popen(honcho, env=env)
        try:
            processes.wait()
        except KeyboardInterrupt:
            processes.send_signal(signal.SIGTERM)  # honcho stops every process it started
            try:
                processes.wait(timeout=20)
            except subprocess.TimeoutExpired:
                processes.kill()
        finally:
            if settings.EMBEDDED_REDIS_DIR:
                embedded_redis.stop(Path(settings.EMBEDDED_REDIS_DIR))
                self.stdout.write("embedded redis stopped")
