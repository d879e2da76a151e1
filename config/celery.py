"""The Celery app. Broker from CELERY_BROKER_URL (default: the filesystem broker under ARBITER_DATA_DIR)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("arbiter")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["feedback.exports"])  # feedback.exports.tasks: snapshot writes
