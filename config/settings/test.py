"""Tests: the database from DATABASE_URL (SQLite by default), tasks run where they are called."""

import os

from config.settings.base import *
from config.settings.base import env_bool

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", True)
CELERY_TASK_EAGER_PROPAGATES = True
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": None, "anon": None}}
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
