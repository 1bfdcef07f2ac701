"""Shared infrastructure that the apps and the project wiring both use: the Redis clients, the
circuit breaker for Redis on the request path, the API's one error shape, and the embedded Redis
server for machines without one. Plain modules, not a Django app; they import no app and not the
project package (``tradinggame``), so every side can depend on them.
"""
