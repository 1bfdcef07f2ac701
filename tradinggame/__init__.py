"""Project wiring: settings, URLs, the ASGI application and the Celery app."""

from tradinggame.celery import app as celery_app

__all__ = ["celery_app"]
