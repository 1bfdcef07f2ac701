"""A circuit breaker for Redis calls on the request path.

The web process runs its sync views on one thread, so a Redis that stops answering would make
every request wait out its own timeout in turn. After one failure, the breaker skips Redis
for a moment: callers answer at once as if it were down (the rate limiter with 503, the
failed-key throttle by stepping aside), then try again.
"""

from __future__ import annotations

import time

OPEN_S = 2.0


class Breaker:
    def __init__(self, open_s: float = OPEN_S) -> None:
        self.open_s = open_s
        self._open_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.open_s

    def reset(self) -> None:
        self._open_until = 0.0


redis_on_request_path = Breaker()
