"""Named rate limits: creating, replacing and deleting them, and checking the names nodes use.

The limit itself is enforced by the engine (``engine/rate_limits.py``), which reads the row
each time a limited node is about to run, so an edit applies to the next start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction

from executions.models import Node, RateLimit

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "must start with a letter or '_' and hold at most 64 letters, digits, '_', '.' and '-'"
MAX_PERIOD_SECONDS = 86400
MAX_LIMIT = 1_000_000


class RateLimitNameTaken(Exception):
    pass


class RateLimitInUse(Exception):
    def __init__(self, name: str, workflows: list[dict[str, str]]):
        super().__init__(f"rate limit {name!r} is used by {len(workflows)} workflow(s)")
        self.workflows = workflows


def rate_limit_reference_errors(
    *, owner, nodes: Iterable[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """``{"nodes[i].rate_limit.name": [problem]}`` for every node naming a rate limit that
    ``owner`` does not have."""
    wanted = {
        i: n["rate_limit"]["name"] for i, n in enumerate(nodes) if (n.get("rate_limit") or {})
    }
    if not wanted:
        return {}
    existing = set(
        RateLimit.objects.filter(owner=owner, name__in=set(wanted.values())).values_list(
            "name", flat=True
        )
    )
    return {
        f"nodes[{i}].rate_limit.name": [
            f"rate limit {name!r} does not exist (create it at /api/rate-limits/)"
        ]
        for i, name in wanted.items()
        if name not in existing
    }


def rate_limit_used_by(*, owner_id: int, name: str) -> list[dict[str, str]]:
    """The workflows whose current version has a node limited by ``name`` (Node rows mirror
    the current version)."""
    rows = (
        Node.objects.filter(workflow__owner_id=owner_id, rate_limit__name=name)
        .values_list("workflow_id", "workflow__name")
        .distinct()
    )
    return sorted(
        ({"id": str(wid), "name": wname} for wid, wname in rows),
        key=lambda w: (w["name"], w["id"]),
    )


def rate_limit_create(*, owner, name: str, limit: int, period_seconds: int) -> RateLimit:
    try:
        with transaction.atomic():
            return RateLimit.objects.create(
                owner=owner, name=name, limit=limit, period_seconds=period_seconds
            )
    except IntegrityError:  # a concurrent create with the same name won
        raise RateLimitNameTaken(f"a rate limit named {name!r} already exists") from None


def rate_limit_replace(
    *, rate_limit: RateLimit, name: str, limit: int, period_seconds: int
) -> RateLimit:
    """Change a limit. A rename is refused while workflows refer to the old name (they would
    fail at run time); a new limit or period applies to the next start."""
    if name != rate_limit.name:
        used = rate_limit_used_by(owner_id=rate_limit.owner_id, name=rate_limit.name)
        if used:
            raise RateLimitInUse(rate_limit.name, used)
    rate_limit.name, rate_limit.limit, rate_limit.period_seconds = name, limit, period_seconds
    try:
        with transaction.atomic():
            rate_limit.save()
    except IntegrityError:
        raise RateLimitNameTaken(f"a rate limit named {name!r} already exists") from None
    return rate_limit


def rate_limit_delete(*, rate_limit: RateLimit) -> None:
    used = rate_limit_used_by(owner_id=rate_limit.owner_id, name=rate_limit.name)
    if used:
        raise RateLimitInUse(rate_limit.name, used)
    rate_limit.delete()
