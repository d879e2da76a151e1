import gc
import itertools
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# A web worker runs several request threads under one GIL. With CPython's default 5 ms switch interval a
# thread that gave up the GIL for a database call waits up to 5 ms to get it back from a thread busy with
# framework work, and on SQLite it waits while holding the one write lock, so every writer queues behind it.
# 0.5 ms keeps those hand-offs short (benchmarks/annotate_load.py, 32 annotators on SQLite, 2 x 4 workers:
# 0.40-0.43 x the ceiling against 0.22-0.37 x with the default). ARBITER_GIL_SWITCH_INTERVAL=0 keeps Python's.
_switch = float(os.environ.get("ARBITER_GIL_SWITCH_INTERVAL", "0.0005"))
if _switch > 0:
    sys.setswitchinterval(_switch)

#: requests after which a web process moves every object it holds to the collector's permanent generation
FREEZE_AT = (100, 1_000, 10_000)


class FreezeAfterWarmUp:
    """WSGI middleware: after a process's first requests have built what Django, DRF and the app make lazily
    (URL resolvers, serializer fields, query plans: ~150,000 objects), move them out of the cyclic garbage
    collector's reach with gc.freeze(). Otherwise every full (generation 2) collection walks them all: a pause
    of 40-75 ms, about every 3,000 requests, that stalls every thread of the process, and on SQLite every writer
    of every process when it falls inside the write lock. Measured in process (3,000 next + submit cycles):
    two 58-74 ms collections without, none (longest pause 0.8 ms) with. ARBITER_GC_FREEZE=0 turns it off."""

    def __init__(self, app: Callable[..., Iterable[bytes]], at: Iterable[int] = FREEZE_AT) -> None:
        self.app = app
        self.at = frozenset(at)
        self._requests = itertools.count(1)  # next() on a count is atomic under the GIL

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if next(self._requests) in self.at:
            gc.freeze()
        return self.app(environ, start_response)


application = get_wsgi_application()
if os.environ.get("ARBITER_GC_FREEZE", "1") != "0":
    application = FreezeAfterWarmUp(application)
