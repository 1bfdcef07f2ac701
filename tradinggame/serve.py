"""The web process: uvicorn serving the ASGI app, with API keys redacted from every log line.

``python -m tradinggame.serve [--host H] [--port P]`` (defaults from ITG_HOST / ITG_PORT).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from typing import Any

import uvicorn

KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s\"']+")


class RedactApiKeys(logging.Filter):
    """Replaces ``api_key=<secret>`` in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = KEY_IN_TEXT.sub(r"\1[redacted]", record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(KEY_IN_TEXT.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args)
        return True


def log_config(level: str = "INFO") -> dict[str, Any]:
    config: dict[str, Any] = {**uvicorn.config.LOGGING_CONFIG}
    config["filters"] = {"redact": {"()": RedactApiKeys}}
    config["handlers"] = {name: {**handler, "filters": ["redact"]} for name, handler in config["handlers"].items()}
    config["loggers"] = {name: {**logger, "level": level} for name, logger in config["loggers"].items()}
    return config


def served_application() -> Any:
    """The ASGI application, in a web process of its own: the collector tuned once it is built."""
    from infra import collector
    from tradinggame.asgi import application

    collector.tune()
    return application


def main() -> None:
    # The environment, not django.conf.settings: this runs before Django is configured (uvicorn
    # imports the settings with the ASGI application, in each web process it starts).
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("ITG_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ITG_PORT", "8000")))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("ITG_WEB_WORKERS", "1")),
        help="web processes sharing the port (each runs its sync views on one thread)",
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")
    uvicorn.run(
        "tradinggame.serve:served_application",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=log_config(os.environ.get("LOG_LEVEL", "INFO")),
        access_log=args.access_log,
        ws_max_size=1024 * 1024,  # larger frames are closed with 1009; up to it, the consumer answers
        # No per-message compression: frames are small, and deflating each one for every
        # connection cost more CPU than anything else in the fan-out.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=3,
        lifespan="off",
        workers=args.workers,
    )


if __name__ == "__main__":
    main()
