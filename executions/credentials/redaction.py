"""Keeping credential values out of what is stored, logged and answered.

While a node run executes, every credential it resolves adds its secret values to the
run's :class:`Secrets` (a context variable, so each worker process, thread or coroutine has its
own). The runner then redacts the node's output, error and wait state before they are
written, and :class:`RedactingFilter` (installed on the log handlers in settings.LOGGING)
redacts log lines emitted meanwhile. Redaction is by value, recursive through lists and
objects (keys too), and inside strings, so a remote server echoing a token back, or an error
message quoting a URL that carries one, is caught as well. Besides the raw value it also covers
the forms a value takes on the wire: JSON-escaped, percent-encoded, and the base64 ``user:pass``
of basic authentication.

This module imports nothing from the ORM: the logging configuration loads it early.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator
from contextvars import ContextVar, Token
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"


class Secrets:
    """The secret values seen so far in one scope, with every wire form of each."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: list[str] | None = None

    def __bool__(self) -> bool:
        return bool(self._values)

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def add(self, *values: str) -> None:
        for value in values:
            if not isinstance(value, str) or not value:
                continue
            forms = {
                value,
                json.dumps(value)[1:-1],
                quote(value, safe=""),
                quote(value, safe="/"),  # Jinja's urlencode filter
                quote_plus(value),
                quote_plus(value, safe="/"),
            }
            self._values.update(f for f in forms if f)
        self._ordered = None

    def add_basic_auth(self, username: str, password: str) -> None:
        """The Authorization value of basic auth hides the password in plain base64."""
        pair = f"{username}:{password}".encode()
        self.add(username, password, base64.b64encode(pair).decode())

    def _longest_first(self) -> list[str]:
        # A secret that contains another must be replaced whole, before its part is.
        if self._ordered is None:
            self._ordered = sorted(self._values, key=len, reverse=True)
        return self._ordered

    def redact_text(self, text: str) -> str:
        for value in self._longest_first():
            if value in text:
                text = text.replace(value, MASK)
        return text

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value with every secret replaced by ``***``."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {
                (self.redact_text(k) if isinstance(k, str) else k): self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        return value


_current: ContextVar[Secrets | None] = ContextVar("weconnect_secrets", default=None)


def activate(secrets: Secrets) -> Token:
    return _current.set(secrets)


def deactivate(token: Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def scope() -> Iterator[Secrets]:
    """Collect the secrets used inside the block (and redact log lines emitted in it)."""
    secrets = Secrets()
    token = activate(secrets)
    try:
        yield secrets
    finally:
        deactivate(token)


def current() -> Secrets | None:
    return _current.get()


def redact_current(value: Any) -> Any:
    """``value`` redacted with the active scope's secrets (unchanged outside a scope), for what
    a run stores elsewhere, such as a sub-workflow's input."""
    secrets = _current.get()
    return secrets.redact(value) if secrets else value


def remember(values: Iterable[str]) -> None:
    """Record secret values in the active scope, if any (a credential just resolved)."""
    secrets = _current.get()
    if secrets is not None:
        secrets.add(*values)


def remember_basic_auth(username: str, password: str) -> None:
    secrets = _current.get()
    if secrets is not None:
        secrets.add_basic_auth(username, password)


def redact_outcome(secrets: Secrets, value: Any, failure: BaseException | None) -> tuple[Any, Any]:
    """Redact what a node run returned or raised, before the runner stores it: a plain output,
    a Result's output, a Wait's state, and a NodeError's message and details (duck-typed, so
    this module stays importable before the apps are)."""
    if failure is not None:
        message = getattr(failure, "message", None)
        if isinstance(message, str):
            failure.message = secrets.redact_text(message)
        failure.args = tuple(secrets.redact(a) for a in failure.args)
        if isinstance(getattr(failure, "details", None), dict):
            failure.details = secrets.redact(failure.details)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = {f.name for f in dataclasses.fields(value)}
        if "output" in names:
            value = dataclasses.replace(value, output=secrets.redact(value.output))
        elif "state" in names:
            value = dataclasses.replace(value, state=secrets.redact(dict(value.state)))
    else:
        value = secrets.redact(value)
    return value, failure


class RedactingFilter(logging.Filter):
    """Redacts the active scope's secrets from a record's message, arguments, extra fields
    and traceback. The formatters of weconnect.logging format ``exc_info`` themselves, so a
    traceback is rendered here, redacted, and folded into the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _current.get()
        if not secrets:
            return True
        message = secrets.redact_text(record.getMessage())
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            message = f"{message}\n{secrets.redact_text(formatted)}"
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = message, None
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and isinstance(value, (str, dict, list)):
                setattr(record, name, secrets.redact(value))
        return True


_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
