"""Token authentication with a small in-process cache of the token -> user lookup.

DRF's TokenAuthentication costs one query (token joined to user) per request. The cache keeps that answer
for ``API_TOKEN_CACHE_SECONDS`` (default 60; 0 turns it off), so a revoked token or a deactivated user is
refused at the latest that long afterwards in other processes (at once in the process that revoked it via
`token_forget`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from rest_framework.authentication import TokenAuthentication

_lock = threading.Lock()
_cache: dict[str, tuple[float, Any, Any]] = {}
MAX_ENTRIES = 10_000


def token_forget(key: str | None = None) -> None:
    """Drop one cached token (or all of them)."""
    with _lock:
        if key is None:
            _cache.clear()
        else:
            _cache.pop(key, None)


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        ttl = float(getattr(settings, "API_TOKEN_CACHE_SECONDS", 60))
        now = time.monotonic()
        if ttl > 0:
            hit = _cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1], hit[2]
        user, token = super().authenticate_credentials(key)
        if ttl > 0:
            with _lock:
                if len(_cache) >= MAX_ENTRIES:
                    _cache.clear()
                _cache[key] = (now + ttl, user, token)
        return user, token
