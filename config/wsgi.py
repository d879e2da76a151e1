import os
import sys

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

application = get_wsgi_application()
