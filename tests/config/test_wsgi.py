"""config/wsgi.py: the web process's GIL switch interval and its gc.freeze() after the warm-up requests."""

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


def test_objects_built_by_the_first_requests_leave_the_collectors_reach(monkeypatch, restore_switch_interval):
    """After the warm-up requests the process's objects sit in the permanent generation, so full collections
    no longer walk them (a 40-75 ms pause each, measured, without)."""
    import gc

    from config.wsgi import FreezeAfterWarmUp

    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return [b"ok"]

    gc.unfreeze()
    wrapped = FreezeAfterWarmUp(app, at=(3,))
    try:
        for n in range(1, 5):
            assert wrapped({"PATH_INFO": f"/{n}"}, lambda *a: None) == [b"ok"]
            if n < 3:
                assert gc.get_freeze_count() == 0
            else:
                assert gc.get_freeze_count() > 1000
        assert calls == ["/1", "/2", "/3", "/4"]
    finally:
        gc.unfreeze()


def test_gc_freeze_can_be_turned_off(monkeypatch, restore_switch_interval):
    monkeypatch.setenv("ARBITER_GC_FREEZE", "0")
    module = _load_wsgi()
    assert not isinstance(module.application, module.FreezeAfterWarmUp)
    monkeypatch.delenv("ARBITER_GC_FREEZE")
    module = _load_wsgi()
    assert isinstance(module.application, module.FreezeAfterWarmUp)
