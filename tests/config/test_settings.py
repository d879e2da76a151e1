"""Settings come from the environment; production refuses to start unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_settings(module: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL"}}
    return subprocess.run(
        [sys.executable, "-c", f"import {module} as s; print(s.DEBUG, s.DATABASES['default']['ENGINE'])"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_default_secret_key(tmp_path):
    r = load_settings("config.settings.production", ARBITER_DATA_DIR=str(tmp_path))
    assert r.returncode != 0 and "SECRET_KEY" in r.stderr


def test_production_refuses_debug(tmp_path):
    r = load_settings(
        "config.settings.production", DEBUG="1", SECRET_KEY="x" * 50, ARBITER_DATA_DIR=str(tmp_path)
    )
    assert r.returncode != 0 and "DEBUG must be off" in r.stderr


def test_production_starts_with_env(tmp_path):
    r = load_settings(
        "config.settings.production",
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://u@db:5432/arbiter",
        ARBITER_DATA_DIR=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "django.db.backends.postgresql"]


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_busy_timeout():
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite-only setting; this run uses " + connection.vendor)
    with connection.cursor() as cur:
        cur.execute("PRAGMA journal_mode")
        mode = cur.fetchone()[0]
        cur.execute("PRAGMA busy_timeout")
        timeout_ms = cur.fetchone()[0]
    # The in-memory test database cannot use WAL; file databases do (checked below).
    assert mode in {"wal", "memory"}
    assert timeout_ms >= 1000


def test_file_database_uses_wal(tmp_path):
    code = (
        "import django, os; django.setup();"
        "from django.db import connection; c = connection.cursor(); c.execute('PRAGMA journal_mode');"
        "print(c.fetchone()[0])"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "ARBITER_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wal"
