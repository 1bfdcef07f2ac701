"""The Celery app; the matching worker serves its ``matching`` queue with one process."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")  # before Django is configured

app = Celery("tradinggame")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["exchange"])
