"""Reading derived rows from the database in constant memory, fast, in a fixed order.

The snapshot's items are streamed in (prompt, item) order through a server-side cursor — a narrow,
cheap sort — and a few hundred at a time fetch their rows through the indexes (one compiled
statement, reused). Preference pairs and thumbs labels come narrow (ids and numbers); their
prompts and candidates are fetched once per slice and joined in Python, so a text shared by
several pairs is read and decoded once. No ORDER BY ever runs over the whole export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.sql.constants import MULTI

from feedback.exports.spec import ExportSpec
from feedback.models import ItemCandidate

#: The tuple layout of a preference row as the aggregation reads it (see _preference_rows).
PREF_FIELDS = (
    "annotation__item_id",  # 0
    "annotation_id",  # 1
    "annotation__kind",  # 2
    "prompt_id",  # 3
    "prompt__content_hash",  # 4
    "prompt__messages",  # 5
    "prompt__text",  # 6
    "chosen_id",  # 7
    "chosen__text",  # 8
    "chosen__finish_reason",  # 9
    "chosen__model_version_id",  # 10
    "rejected_id",  # 11
    "rejected__text",  # 12
    "rejected__finish_reason",  # 13
    "rejected__model_version_id",  # 14
    "is_tie",  # 15
    "margin",  # 16
)

#: The tuple layout of a thumbs-label row (see _label_rows).
LABEL_FIELDS = (
    "annotation__item_id",  # 0
    "annotation_id",  # 1
    "annotation__item__prompt_id",  # 2
    "annotation__item__prompt__content_hash",  # 3
    "annotation__item__prompt__messages",  # 4
    "annotation__item__prompt__text",  # 5
    "candidate_id",  # 6
    "candidate__text",  # 7
    "candidate__finish_reason",  # 8
    "candidate__model_version_id",  # 9
    "label",  # 10
)


def stream_values(
    qs: QuerySet, fields: Iterable[str], *, chunk_size: int, server_side: bool = True
) -> Iterator[tuple]:
    """Raw database values of ``qs.values_list(*fields)``, fetched ``chunk_size`` at a time.

    Skips Django's per-row converters (JSON stays text, SQLite booleans stay 0/1): the callers
    decode only what they need, once per prompt rather than once per row.
    """
    query = qs.values_list(*fields).query
    compiler = query.get_compiler(using=qs.db)
    chunks = compiler.execute_sql(MULTI, chunked_fetch=server_side, chunk_size=chunk_size)
    if chunks is None:  # pragma: no cover - an empty IN () short-circuits to None
        return
    for chunk in chunks:
        yield from chunk


def stream_by_items(
    spec: ExportSpec,
    qs: QuerySet,
    fields: Iterable[str],
    *,
    item_field: str,
    chunk_size: int,
    items_per_query: int = 500,
) -> Iterator[tuple]:
    """``qs``'s rows for the snapshot's items, a few hundred items per query, in (prompt, item) order.

    One ORDER BY over every row would make the database sort the whole export, wide text columns
    included (PostgreSQL spilled 26 MB to disk for 120k pairs; SQLite's sorter holds its cache).
    Instead the item ids are streamed in (prompt, item) order — a narrow, cheap sort — and each
    slice of items fetches its rows through the indexes and sorts them in memory. Same order,
    same bytes, no big sort.
    """

    fields = tuple(fields)
    run = _SliceQuery(qs, fields, item_field)
    for batch in item_slices(spec, chunk_size=chunk_size, items_per_query=items_per_query):
        yield from run(batch)


def item_slices(spec: ExportSpec, *, chunk_size: int, items_per_query: int = 500) -> Iterator[list[int]]:
    """The snapshot's item ids in (prompt, item) order, a few hundred at a time (a server-side cursor)."""
    from feedback.models import Item

    items = Item.objects.filter(spec.item_q()).order_by("prompt_id", "id")
    batch: list[int] = []
    for (item_id,) in stream_values(items, ("id",), chunk_size=max(chunk_size, items_per_query)):
        batch.append(item_id)
        if len(batch) >= items_per_query:
            yield batch
            batch = []
    if batch:
        yield batch


class SliceJoin:
    """Rows of one derived table for a slice of items, with their prompts and candidates fetched once each.

    A pair names two candidates and a prompt that many other pairs share (a ranking of 4 gives 6
    pairs: each answer appears in 3 of them, the prompt in all 6). Joining them in SQL makes the
    database look each up, and send each text, once per pair; here the slice's pairs come narrow
    (ids and numbers), and the slice's prompts and candidates come once each, joined in Python.
    """

    def __init__(
        self, qs: QuerySet, fields: tuple[str, ...], item_field: str, candidate_index: tuple[int, ...]
    ):
        from feedback.models import Item

        self.rows = _SliceQuery(qs, fields, item_field)
        self.prompts = _SliceQuery(
            Item.objects.all(),
            ("id", "prompt_id", "prompt__content_hash", "prompt__messages", "prompt__text"),
            "id",
        )
        self.candidates = _SliceQuery(
            ItemCandidate.objects.all(),
            ("candidate_id", "candidate__text", "candidate__finish_reason", "candidate__model_version_id"),
            "item_id",
        )
        self.candidate_index = candidate_index

    def __call__(self, batch: list[int]) -> tuple[list[tuple], dict[int, tuple], dict[int, tuple]]:
        rows = self.rows(batch)
        if not rows:
            return [], {}, {}
        prompts = {r[0]: r[1:] for r in self.prompts(batch)}
        cands = {r[0]: r[1:] for r in self.candidates(batch)}
        missing = {row[i] for row in rows for i in self.candidate_index} - cands.keys()
        if missing:  # a derived row naming a candidate its item does not show (imported data)
            from feedback.models import Candidate

            for cid, text, fin, ver in Candidate.objects.filter(id__in=sorted(missing)).values_list(
                "id", "text", "finish_reason", "model_version_id"
            ):
                cands[cid] = (text, fin, ver)
        return rows, prompts, cands


class _SliceQuery:
    """``qs.filter(<item_field>__in=ids)`` compiled to SQL once per slice size, then run with new ids."""

    _SENTINEL = -(10**15)

    def __init__(self, qs: QuerySet, fields: tuple[str, ...], item_field: str):
        self.qs, self.fields, self.item_field = qs, fields, item_field
        self._compiled: dict[int, tuple[str, list[Any], list[tuple[int, int]]]] = {}

    def _compile(self, n: int) -> tuple[str, list[Any], list[tuple[int, int]]]:
        sentinels = [self._SENTINEL - k for k in range(n)]
        query = self.qs.filter(**{f"{self.item_field}__in": sentinels}).values_list(*self.fields).query
        sql, params = query.get_compiler(using=self.qs.db).as_sql()
        params = list(params)
        slots = [
            (i, self._SENTINEL - p)
            for i, p in enumerate(params)
            if isinstance(p, int) and p <= self._SENTINEL
        ]
        if len(slots) != n:  # pragma: no cover - Django changed how IN () is compiled
            raise RuntimeError(f"could not locate the {n} item ids in the compiled export query")
        return sql, params, slots

    def _compile_array(self) -> tuple[str, list[Any], list[tuple[int, int]]]:
        """PostgreSQL: ``item_id = ANY(%s)`` with one array parameter — the same SQL for every slice, and
        no client-side quoting of hundreds of parameters per query."""
        sql, params, slots = self._compile(1)
        ((index, _),) = slots
        # the index-th placeholder ("%s"; a literal percent sign is "%%") is the item id
        pos, seen = -1, -1
        while seen < index:
            pos = sql.index("%", pos + 1)
            if sql[pos + 1] == "%":
                pos += 1
                continue
            seen += 1
        if sql[pos - 4 : pos] != "IN (" or sql[pos + 2] != ")":  # pragma: no cover - defensive
            return self._compile(1)
        sql = sql[: pos - 4] + "= ANY(%s)" + sql[pos + 3 :]
        return sql, params, [(index, -1)]

    def __call__(self, ids: list[int]) -> list[tuple]:
        conn = connections[self.qs.db]
        if conn.vendor == "postgresql":
            if "array" not in self._compiled:
                self._compiled["array"] = self._compile_array()  # type: ignore[index]
            sql, params, slots = self._compiled["array"]  # type: ignore[index]
            params = list(params)
            ((index, kind),) = slots
            params[index] = list(ids) if kind == -1 else ids[0]
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        n = len(ids)
        if n not in self._compiled:
            self._compiled[n] = self._compile(n)
        sql, params, slots = self._compiled[n]
        params = list(params)
        for i, k in slots:
            params[i] = ids[k]
        with connections[self.qs.db].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()


PAIR_NARROW = (
    "annotation__item_id",
    "annotation_id",
    "annotation__kind",
    "id",
    "chosen_id",
    "rejected_id",
    "is_tie",
    "margin",
)


#: Fetch the next slice on a second connection while this one is turned into rows (see prefetched).
PREFETCH = True


def prefetched(fetch: Callable[[list[int]], Any], slices: Iterable[list[int]]) -> Iterator[Any]:
    """``fetch(slice)`` for each slice, in order, the next one running on a helper thread meanwhile.

    The database (PostgreSQL's server, SQLite's C code — both let go of the GIL) works on slice n+1
    while Python formats slice n. The helper thread has its own connection, so it is used only
    outside a transaction (inside one, another connection would not see the same rows); its
    connection is closed at the end. Results are consumed in order, so the output is unchanged.
    """
    conn = connections["default"]
    if not PREFETCH or conn.in_atomic_block or conn.vendor not in ("postgresql", "sqlite"):
        for batch in slices:
            yield fetch(batch)
        return
    from concurrent.futures import ThreadPoolExecutor

    def first_use() -> None:
        helper = connections["default"]
        helper.ensure_connection()
        if helper.vendor == "sqlite":
            with helper.cursor() as cur:
                cur.execute("PRAGMA cache_size = -8000")

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-prefetch") as pool:
        try:
            pool.submit(first_use).result()
            pending = None
            for batch in slices:
                future = pool.submit(fetch, batch)
                if pending is not None:
                    yield pending.result()
                pending = future
            if pending is not None:
                yield pending.result()
        finally:
            pool.submit(connections.close_all).result()


def preference_rows(spec: ExportSpec, qs: QuerySet, *, chunk_size: int) -> Iterator[tuple]:
    """Rows shaped like PREF_FIELDS, in (prompt, item, annotation, pair) order, slice by slice."""
    join = SliceJoin(qs, PAIR_NARROW, "annotation__item_id", candidate_index=(4, 5))
    for rows, prompts, cands in prefetched(join, item_slices(spec, chunk_size=chunk_size)):
        if not rows:
            continue
        rows.sort(key=lambda r: (prompts[r[0]][0], r[0], r[1], r[3]))
        for item_id, ann_id, kind, _pair_id, c_id, r_id, is_tie, margin in rows:
            prompt_id, content_hash, messages, text = prompts[item_id]
            c_text, c_fin, c_ver = cands[c_id]
            r_text, r_fin, r_ver = cands[r_id]
            yield (
                item_id,
                ann_id,
                kind,
                prompt_id,
                content_hash,
                messages,
                text,
                c_id,
                c_text,
                c_fin,
                c_ver,
                r_id,
                r_text,
                r_fin,
                r_ver,
                is_tie,
                margin,
            )


LABEL_NARROW = ("annotation__item_id", "annotation_id", "id", "candidate_id", "label")


def label_rows(spec: ExportSpec, qs: QuerySet, *, chunk_size: int) -> Iterator[tuple]:
    """Rows shaped like LABEL_FIELDS, in (prompt, item, annotation, label) order, slice by slice."""
    join = SliceJoin(qs, LABEL_NARROW, "annotation__item_id", candidate_index=(3,))
    for rows, prompts, cands in prefetched(join, item_slices(spec, chunk_size=chunk_size)):
        if not rows:
            continue
        rows.sort(key=lambda r: (prompts[r[0]][0], r[0], r[1], r[2]))
        for item_id, ann_id, _label_id, cand_id, label in rows:
            prompt_id, content_hash, messages, text = prompts[item_id]
            c_text, c_fin, c_ver = cands[cand_id]
            yield (
                item_id,
                ann_id,
                prompt_id,
                content_hash,
                messages,
                text,
                cand_id,
                c_text,
                c_fin,
                c_ver,
                label,
            )


@contextmanager
def bounded_reads(alias: str = "default", *, sqlite_cache_kib: int = 8000) -> Iterator[None]:
    """Cap SQLite's page cache (which also bounds its sorter's memory) while an export reads.

    The project's connections ask for a 32 MB cache; an export's ORDER BY over a million rows would
    use that twice over (cache + sorter) before spilling to temporary files. PostgreSQL sorts on the
    server, so nothing changes there.
    """
    conn = connections[alias]
    if conn.vendor != "sqlite":
        yield
        return
    with conn.cursor() as cur:
        cur.execute("PRAGMA cache_size")
        before = cur.fetchone()[0]
        cur.execute(f"PRAGMA cache_size = -{int(sqlite_cache_kib)}")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(f"PRAGMA cache_size = {int(before)}")


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while rows stream (restored after).

    An export makes millions of short-lived tuples, lists and dicts and no reference cycles, so
    the collector only re-scans the rows buffered for the next Arrow batch, over and over: pausing
    it saves ~15 % of the CPU of a Parquet export. Memory is still freed by reference counting.
    """
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
