"""PostgreSQL: what submit validates against, remembered by the process that served the next (see
_SUBMIT_CONTEXT). Leasing remembers, submitting recalls."""

from __future__ import annotations

import threading
from collections import OrderedDict

#: PostgreSQL: (annotator id, item id) -> what submit validates against (order shown, prompt id, task kind,
#: allow_ties), remembered by the process that leased the item. A client on a keep-alive connection submits to
#: the process that served its next, which then skips submit's read (one round trip fewer). Never trusted: the
#: write takes the lease only if all of it still holds; otherwise submit reads the lease as usual.
_SUBMIT_CONTEXT: OrderedDict[tuple[int, int], tuple[list[int], int, str, bool]] = OrderedDict()
_SUBMIT_CONTEXT_MAX = 4096
_submit_context_lock = threading.Lock()


def _remember_for_submit(user_id: int, item_id: int, context: tuple[list[int], int, str, bool]) -> None:
    with _submit_context_lock:
        _SUBMIT_CONTEXT[(user_id, item_id)] = context
        if len(_SUBMIT_CONTEXT) > _SUBMIT_CONTEXT_MAX:
            _SUBMIT_CONTEXT.popitem(last=False)


def _recall_for_submit(user_id: int, item_id: int) -> tuple[list[int], int, str, bool] | None:
    with _submit_context_lock:
        return _SUBMIT_CONTEXT.pop((user_id, item_id), None)
