"""config/wsgi.py: the web process's GIL switch interval."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.fixture
def restore_switch_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def _load_wsgi():
    import config.wsgi

    return importlib.reload(config.wsgi)


def test_web_process_hands_the_gil_over_every_half_millisecond(monkeypatch, restore_switch_interval):
    monkeypatch.delenv("ARBITER_GIL_SWITCH_INTERVAL", raising=False)
    sys.setswitchinterval(0.005)
    module = _load_wsgi()
    assert sys.getswitchinterval() == pytest.approx(0.0005, rel=0.01)
    assert callable(module.application)


def test_switch_interval_is_configurable_and_zero_keeps_pythons(monkeypatch, restore_switch_interval):
    monkeypatch.setenv("ARBITER_GIL_SWITCH_INTERVAL", "0.002")
    _load_wsgi()
    assert sys.getswitchinterval() == pytest.approx(0.002, rel=0.01)
    sys.setswitchinterval(0.005)
    monkeypatch.setenv("ARBITER_GIL_SWITCH_INTERVAL", "0")
    _load_wsgi()
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.01)
