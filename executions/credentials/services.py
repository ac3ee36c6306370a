"""Credential services: create, replace, delete, find their users, resolve them for a node.

A node refers to a credential by name, in two ways: ``"credential": "<name>"`` at the top of
its config (http_request applies it to the request) and ``credentials.<name>.<field>`` in a
template. :func:`credential_references` finds both, so a workflow that names a credential its
owner does not have is refused when saved, a credential in use cannot be deleted, and the API
can say which workflows use one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from executions.credentials import crypto, redaction
from executions.credentials.models import Credential
from executions.errors import NonRetryableError
from executions.models import Node

Kind = Credential.Kind

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
NAME_RULE = "must start with a letter or '_' and hold at most 64 letters, digits and '_' (it is used as credentials.<name> in templates)"
FIELD_RE = NAME_RE
# RFC 9110 token characters.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Headers whose meaning belongs to the HTTP client, not to a credential.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
MAX_VALUE_CHARS = 8192
MAX_GENERIC_FIELDS = 50

# Which fields each kind requires; every value is a string.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.BEARER: ("token",),
    Kind.BASIC: ("username", "password"),
    Kind.HEADER: ("header_name", "value"),
    Kind.GENERIC: (),
}
# Fields that are names rather than secrets: they are not redacted.
_NOT_SECRET = frozenset({"header_name"})

_TEMPLATE_DOT = re.compile(r"\bcredentials\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_TEMPLATE_ITEM = re.compile(r"\bcredentials\s*\[\s*(['\"])(.*?)\1\s*\]")


class CredentialInUse(Exception):
    def __init__(self, name: str, workflows: list[dict[str, str]]):
        self.workflows = workflows
        names = ", ".join(f"{w['name']!r} ({w['id']})" for w in workflows)
        super().__init__(f"credential {name!r} is used by workflow(s) {names}")


class CredentialNameTaken(Exception):
    pass


# --- validation of the secret data ----------------------------------------------------------


def credential_data_errors(*, kind: str, data: Any) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Check ``data`` for ``kind``; returns (clean data, {field: [reasons]})."""
    if kind not in Kind.values:
        return {}, {"kind": [f"must be one of {', '.join(Kind.values)}"]}
    if not isinstance(data, Mapping):
        return {}, {"data": ["must be an object"]}
    errors: dict[str, list[str]] = {}
    clean: dict[str, str] = {}
    required = REQUIRED_FIELDS[kind]
    if kind == Kind.GENERIC:
        if not data:
            errors["data"] = ["a generic credential needs at least one field"]
        if len(data) > MAX_GENERIC_FIELDS:
            errors["data"] = [f"at most {MAX_GENERIC_FIELDS} fields"]
    for name in required:
        if name not in data or data[name] in (None, ""):
            errors[name] = [f"required for kind {kind!r}"]
    for name, value in data.items():
        if kind != Kind.GENERIC and name not in required:
            errors[str(name)] = [f"not a field of kind {kind!r} (expected {', '.join(required)})"]
            continue
        if kind == Kind.GENERIC and not FIELD_RE.match(str(name)):
            errors[str(name)] = [
                "field names must start with a letter or '_' and hold at most 64 letters, digits and '_'"
            ]
            continue
        if name in errors:
            continue
        if not isinstance(value, str):
            errors[name] = ["must be a string"]
        elif len(value) > MAX_VALUE_CHARS:
            errors[name] = [f"must be at most {MAX_VALUE_CHARS} characters"]
        elif any(c in value for c in "\r\n\x00") and kind != Kind.GENERIC:
            errors[name] = ["must not contain line breaks or NUL (it goes into an HTTP header)"]
        else:
            clean[name] = value
    if kind == Kind.BASIC and ":" in clean.get("username", ""):
        errors["username"] = ["must not contain ':' (RFC 7617)"]
    if kind == Kind.HEADER and "header_name" in clean:
        header = clean["header_name"]
        if not HEADER_NAME_RE.match(header):
            errors["header_name"] = [
                "must be an HTTP header name (letters, digits, '-' and the like)"
            ]
        elif header.lower() in RESERVED_HEADERS:
            errors["header_name"] = [
                f"{header!r} is set by the HTTP client and cannot be a credential"
            ]
    return clean, errors


# --- writes ---------------------------------------------------------------------------------


def credential_create(*, owner, name: str, kind: str, data: Mapping[str, str]) -> Credential:
    credential = Credential(owner=owner, name=name, kind=kind, secret=crypto.encrypt(dict(data)))
    try:
        with transaction.atomic():
            credential.save()
    except IntegrityError:
        raise CredentialNameTaken(f"a credential named {name!r} already exists") from None
    return credential


def credential_replace(
    *, credential: Credential, name: str, kind: str, data: Mapping[str, str]
) -> Credential:
    """Replace the whole credential. Renaming one that workflows use would break them, so it is
    refused like a delete."""
    with transaction.atomic():
        # The row lock orders this against a concurrent delete or replace of the same row.
        credential = Credential.objects.select_for_update().get(pk=credential.pk)
        if name != credential.name:
            users = credential_used_by(credential=credential)
            if users:
                raise CredentialInUse(credential.name, users)
        credential.name, credential.kind = name, kind
        credential.secret = crypto.encrypt(dict(data))
        try:
            with transaction.atomic():
                credential.save()
        except IntegrityError:
            raise CredentialNameTaken(f"a credential named {name!r} already exists") from None
    return credential


def credential_delete(*, credential: Credential) -> None:
    """Delete a credential no workflow refers to; otherwise raise CredentialInUse."""
    with transaction.atomic():
        credential = Credential.objects.select_for_update().get(pk=credential.pk)
        users = credential_used_by(credential=credential)
        if users:
            raise CredentialInUse(credential.name, users)
        credential.delete()


def credential_reencrypt_all(*, batch_size: int = 200) -> tuple[int, int]:
    """Rewrite every secret under the first key. Returns (rows rewritten, rows already current).

    Each row is locked while it is rewritten, so a concurrent replace is not overwritten with
    the old secret; rows are visited by id in batches so memory stays flat."""
    rewritten = current = 0
    last_id = None
    while True:
        qs = Credential.objects.order_by("id")
        if last_id is not None:
            qs = qs.filter(id__gt=last_id)
        ids = list(qs.values_list("id", flat=True)[:batch_size])
        if not ids:
            return rewritten, current
        for cred_id in ids:
            with transaction.atomic():
                row = Credential.objects.select_for_update().filter(id=cred_id).first()
                if row is None:
                    continue
                if crypto.primary_key_encrypts(row.secret):
                    current += 1
                    continue
                Credential.objects.filter(id=cred_id).update(secret=crypto.rotate(row.secret))
                rewritten += 1
        last_id = ids[-1]


# --- references from workflows --------------------------------------------------------------


def credential_references(config: Any) -> set[str]:
    """Names of the credentials a node config refers to (``credential`` key, templates)."""
    names: set[str] = set()
    if isinstance(config, Mapping) and isinstance(config.get("credential"), str):
        names.add(config["credential"])

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if "credentials" in value:
                names.update(_TEMPLATE_DOT.findall(value))
                names.update(m[1] for m in _TEMPLATE_ITEM.findall(value))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(config)
    return names


def credential_reference_errors(*, owner, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Problems with the credentials that workflow ``nodes`` name, for the owner ``owner``."""
    wanted: dict[str, list[str]] = {}
    for n in nodes:
        for name in sorted(credential_references(n.get("config") or {})):
            wanted.setdefault(name, []).append(n["key"])
    if not wanted:
        return []
    existing = set(
        Credential.objects.filter(owner=owner, name__in=list(wanted)).values_list("name", flat=True)
    )
    return [
        f"node {key!r}: credential {name!r} does not exist (create it at /api/credentials/)"
        for name, keys in sorted(wanted.items())
        if name not in existing
        for key in keys
    ]


def credential_usage(*, owner_ids: Iterable[int]) -> dict[tuple[int, str], list[dict[str, str]]]:
    """{(owner id, credential name): [{"id", "name"} of each workflow using it]} from the
    current version of every workflow of those owners (the Node rows mirror it)."""
    usage: dict[tuple[int, str], dict[str, dict[str, str]]] = {}
    rows = Node.objects.filter(workflow__owner_id__in=list(owner_ids)).values_list(
        "workflow__owner_id", "workflow_id", "workflow__name", "config"
    )
    for owner_id, workflow_id, workflow_name, config in rows.iterator(chunk_size=2000):
        for name in credential_references(config):
            usage.setdefault((owner_id, name), {})[str(workflow_id)] = {
                "id": str(workflow_id),
                "name": workflow_name,
            }
    return {k: sorted(v.values(), key=lambda w: (w["name"], w["id"])) for k, v in usage.items()}


def credential_used_by(*, credential: Credential) -> list[dict[str, str]]:
    return credential_usage(owner_ids=[credential.owner_id]).get(
        (credential.owner_id, credential.name), []
    )


# --- use by nodes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedCredential:
    name: str
    kind: str
    fields: Mapping[str, str]

    def headers(self) -> dict[str, str]:
        """The request headers this credential sets (none for a generic one)."""
        f = self.fields
        if self.kind == Kind.BEARER:
            return {"Authorization": f"Bearer {f['token']}"}
        if self.kind == Kind.BASIC:
            import base64

            pair = base64.b64encode(f"{f['username']}:{f['password']}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        if self.kind == Kind.HEADER:
            return {f["header_name"]: f["value"]}
        return {}

    def secret_values(self) -> list[str]:
        return [v for k, v in self.fields.items() if k not in _NOT_SECRET]


def credential_resolve(*, owner_id: int, name: str) -> ResolvedCredential:
    """Decrypt the credential ``name`` of ``owner_id`` for a node run, and record its values in
    the active redaction scope so they never leave the run. A missing or unreadable credential
    is a non-retryable node error (retrying cannot make it appear)."""
    row = (
        Credential.objects.filter(owner_id=owner_id, name=name)
        .values_list("kind", "secret")
        .first()
    )
    if row is None:
        raise NonRetryableError(
            f"credential {name!r} does not exist for this workflow's owner",
            error_type="CredentialNotFound",
        )
    kind, token = row
    try:
        fields = crypto.decrypt(token)
    except (crypto.DecryptionFailed, ImproperlyConfigured) as exc:
        raise NonRetryableError(
            f"credential {name!r} cannot be read: {exc}", error_type="CredentialUnreadable"
        ) from None
    resolved = ResolvedCredential(name=name, kind=kind, fields=fields)
    redaction.remember(resolved.secret_values())
    if kind == Kind.BASIC:
        redaction.remember_basic_auth(fields["username"], fields["password"])
    return resolved


class TemplateCredentials:
    """``credentials`` in node templates: ``{{ credentials.github.token }}`` resolves (and
    records for redaction) only the credentials a template actually reads.

    Deliberately not a Mapping: the sandbox looks attributes up before items, and a method
    such as ``items`` must not shadow a credential of that name."""

    def __init__(self, owner_id: int):
        self._owner_id = owner_id
        self._cache: dict[str, dict[str, str]] = {}

    def __getitem__(self, name: str) -> dict[str, str]:
        if name not in self._cache:
            self._cache[name] = dict(credential_resolve(owner_id=self._owner_id, name=name).fields)
        return self._cache[name]

    def __contains__(self, name: str) -> bool:
        return Credential.objects.filter(owner_id=self._owner_id, name=name).exists()

    def __repr__(self) -> str:
        return "<credentials>"
