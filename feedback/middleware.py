"""Middleware of the feedback app."""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse


class StatementCounter:
    """Middleware (enabled by ARBITER_COUNT_SQL=1): answers carry ``X-SQL-Statements``, the number of statements
    this request sent to the database (BEGIN included where the backend sends one; COMMIT is not a statement
    but a call on the connection, and is not counted)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        count = 0

        def counting(execute, sql, params, many, context):
            nonlocal count
            count += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counting):
            response = self.get_response(request)
        response["X-SQL-Statements"] = str(count)
        return response
