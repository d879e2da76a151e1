"""Simulated annotators: accounts that log in over HTTP and work through next -> submit.

Each annotator holds a hidden preference (see ``preferences.py``) and a noise rate, and sees only
what the REST API shows an annotator: the prompt and the responses, in the order shown, with the
"cut off" flag the annotation page shows for responses that hit the token limit.

Django-free: it speaks HTTP to a running server, like any client.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from .preferences import Judge, Preference

API = "/api/v1"


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str):
        self.status = status
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")


@dataclass
class Account:
    username: str
    password: str


class ApiClient:
    """A logged-in API session (token auth)."""

    def __init__(self, base_url: str, *, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.token: str | None = None

    def _call(
        self, method: str, path: str, *, ok: Sequence[int] = (200, 201), **kwargs: Any
    ) -> requests.Response:
        url = self.base_url + path
        for attempt in range(5):
            try:
                resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.ConnectionError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status_code == 429 and attempt < 4:  # throttled: wait as told
                time.sleep(float(resp.headers.get("Retry-After", "1") or 1))
                continue
            if resp.status_code not in ok:
                raise ApiError(method, path, resp.status_code, resp.text)
            return resp
        raise AssertionError("unreachable")

    def login(self, account: Account) -> str:
        resp = self._call(
            "POST", f"{API}/auth/token/", json={"username": account.username, "password": account.password}
        )
        self.token = resp.json()["token"]
        self.session.headers["Authorization"] = f"Token {self.token}"
        return self.token

    def get_json(self, path: str, **params: Any) -> Any:
        return self._call("GET", API + path, params=params).json()

    def post_json(self, path: str, data: Any) -> Any:
        return self._call("POST", API + path, json=data).json()

    def next_item(self, project_id: int) -> dict[str, Any] | None:
        resp = self._call("POST", f"{API}/projects/{project_id}/next/", ok=(200, 201, 204))
        if resp.status_code == 204 or not resp.content:
            return None
        data = resp.json()
        return data if data.get("item") or data.get("item_id") else None

    def submit(
        self, item_id: int, payload: dict[str, Any], *, idempotency_key: str, time_spent_ms: int
    ) -> dict:
        resp = self._call(
            "POST",
            f"{API}/items/{item_id}/submit/",
            json={"payload": payload, "idempotency_key": idempotency_key, "time_spent_ms": time_spent_ms},
        )
        return resp.json()


def _shown(task: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """(item id, candidates in display order) from a next() answer."""
    item = task.get("item") or {}
    item_id = int(task.get("item_id") or item.get("id"))
    cands = task.get("candidates") or item.get("candidates") or []
    return item_id, list(cands)


def _response(c: dict[str, Any]) -> tuple[str, bool]:
    truncated = bool(c.get("truncated")) or c.get("finish_reason") == "length"
    return str(c.get("text", "")), truncated


def judgement_payload(kind: str, judge: Judge, cands: list[dict[str, Any]]) -> dict[str, Any]:
    """What this annotator submits for an item of ``kind`` showing ``cands``."""
    responses = [_response(c) for c in cands]
    ids = [int(c["id"]) for c in cands]
    if kind == "ranking":
        groups = judge.rank(responses)
        return {"ranking": [[ids[i] for i in g] for g in groups]}
    if kind == "pairwise":
        c = judge.compare(responses[0], responses[1])
        return {"choice": "A" if c > 0 else "B" if c < 0 else "tie"}
    if kind == "binary":
        return {
            "labels": {
                str(cid): ("up" if judge.thumbs(r) else "down") for cid, r in zip(ids, responses, strict=True)
            }
        }
    raise ValueError(f"unknown task kind {kind!r}")


@dataclass
class AnnotatorReport:
    username: str
    submitted: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def annotate(
    base_url: str,
    account: Account,
    *,
    project_id: int,
    kind: str,
    preference: Preference,
    noise: float,
    seed: int,
    max_items: int | None = None,
) -> AnnotatorReport:
    """One annotator: log in, then next -> submit until the project has nothing left for them."""
    report = AnnotatorReport(account.username)
    start = time.perf_counter()
    judge = Judge(preference, noise, random.Random(seed))
    client = ApiClient(base_url)
    client.login(account)
    while max_items is None or report.submitted < max_items:
        task = client.next_item(project_id)
        if task is None:
            break
        item_id, cands = _shown(task)
        t0 = time.perf_counter()
        payload = judgement_payload(kind, judge, cands)
        key = uuid.uuid4().hex
        try:
            client.submit(
                item_id, payload, idempotency_key=key, time_spent_ms=int((time.perf_counter() - t0) * 1000)
            )
        except ApiError as exc:
            report.errors.append(str(exc))
            if len(report.errors) > 20:
                break
            continue
        report.submitted += 1
    report.seconds = time.perf_counter() - start
    return report


def annotate_all(
    base_url: str,
    accounts: Sequence[Account],
    *,
    project_id: int,
    kind: str,
    preference: Preference,
    noise: float = 0.1,
    seed: int = 0,
) -> list[AnnotatorReport]:
    """Every account works the project at once, each in its own thread (own session, own token)."""
    reports: list[AnnotatorReport | None] = [None] * len(accounts)
    failures: list[BaseException] = []

    def work(i: int, account: Account) -> None:
        try:
            reports[i] = annotate(
                base_url,
                account,
                project_id=project_id,
                kind=kind,
                preference=preference,
                noise=noise,
                seed=seed * 1000 + i,
            )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i, a), daemon=True) for i, a in enumerate(accounts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return [r for r in reports if r is not None]
