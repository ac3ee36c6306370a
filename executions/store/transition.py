"""The one way a status is written: a conditional UPDATE over the rows still in an allowed
source status of the transition table."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models

from executions.states import sources_for


def transition(
    queryset: models.QuerySet,
    target: str,
    *,
    table: dict[str, frozenset[str]],
    sources: Iterable[str] | None = None,
    **fields,
) -> int:
    """Move the rows of ``queryset`` to ``target`` if they are in an allowed source status.

    ``sources`` narrows the allowed sources further (it may never widen them). Returns the
    number of rows changed: 0 means another process got there first.
    """
    allowed = sources_for(table, target, sources)
    return queryset.filter(status__in=allowed).update(status=target, **fields)
