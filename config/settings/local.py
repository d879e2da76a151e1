"""Laptop and demo defaults: SQLite in WAL mode, the filesystem broker, DEBUG on unless told otherwise."""

from config.settings.base import *
from config.settings.base import env_bool

DEBUG = env_bool("DEBUG", True)
