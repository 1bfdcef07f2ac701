"""Reaching below ASGI to drop a WebSocket whose peer stopped reading."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any


def server_transport(send: Any) -> Any:
    """The ASGI server's transport behind ``send``, where the server exposes it (uvicorn does).

    ASGI has no way to drop a connection whose peer stopped reading: the close frame queues
    behind the full write buffer and a graceful close waits for that buffer to drain, forever if
    the peer keeps its TCP window shut. Reaching the transport is the only way to reset it.
    (uvloop's transports are not ``asyncio.Transport`` subclasses, hence the duck typing.)
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


def reset_connection(transport: Any) -> None:
    """Abort with a TCP reset, so the kernel frees the unread bytes too (a no-op once closed)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: uvloop, socket already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
