"""Credentials: encryption at rest, key rotation, the write-only API, owner isolation,
references from workflows, deletion while in use. No worker needed."""

from __future__ import annotations

import io
import json
import logging

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from executions.credentials import crypto, redaction
from executions.credentials.models import Credential
from executions.credentials.services import (
    TemplateCredentials,
    credential_create,
    credential_references,
    credential_resolve,
)
from executions.nodes import NonRetryableError
from tests.support.workflows import node

pytestmark = pytest.mark.django_db

SECRET = "tok-5f1b2c9e-very-secret"


def raw_secret_column(credential_id) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT secret FROM executions_credential WHERE id = %s", [credential_id])
        return cur.fetchone()[0]


def create(api, name="gh", kind="bearer", data=None):
    return api.post(
        "/api/credentials/",
        {"name": name, "kind": kind, "data": data if data is not None else {"token": SECRET}},
        format="json",
    )


def http_node(key="call", **config):
    return node(key, "http_request", config={"url": "http://127.0.0.1:9/x", **config})


# --- encryption at rest -------------------------------------------------------------------


def test_column_holds_no_plaintext(api, user):
    r = create(api, data={"token": SECRET})
    assert r.status_code == 201, r.content
    stored = raw_secret_column(r.json()["id"])
    assert SECRET not in stored and "token" not in stored
    # A Fernet token (version byte 0x80 -> "gAAAAA"), readable with the configured key only.
    assert stored.startswith("gAAAAA")
    assert json.loads(Fernet(crypto.configured_keys()[0]).decrypt(stored.encode())) == {
        "token": SECRET
    }
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(stored.encode())


def test_basic_and_generic_also_encrypted(user):
    basic = credential_create(
        owner=user, name="b", kind="basic", data={"username": "u-5f1b", "password": "pw-8d2e"}
    )
    generic = credential_create(
        owner=user, name="g", kind="generic", data={"api_key": "k-77aa", "region": "eu-west"}
    )
    for cred, plain in (
        (basic, ("u-5f1b", "pw-8d2e")),
        (generic, ("k-77aa", "eu-west", "api_key")),
    ):
        stored = raw_secret_column(cred.pk)
        assert not any(p in stored for p in plain)


def test_rotation_two_keys_and_reencrypt_command(user, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WECONNECT_ENCRYPTION_KEYS = [old]
    creds = [
        credential_create(owner=user, name=f"c{i}", kind="bearer", data={"token": f"{SECRET}-{i}"})
        for i in range(3)
    ]
    before = {c.pk: raw_secret_column(c.pk) for c in creds}

    # New key first, old one kept: old rows still decrypt, new writes use the new key.
    settings.WECONNECT_ENCRYPTION_KEYS = [new, old]
    assert credential_resolve(owner_id=user.pk, name="c0").fields == {"token": f"{SECRET}-0"}
    fresh = credential_create(owner=user, name="fresh", kind="bearer", data={"token": "t-new"})
    assert Fernet(new.encode()).decrypt(raw_secret_column(fresh.pk).encode())
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(raw_secret_column(fresh.pk).encode())

    out = io.StringIO()
    call_command("reencrypt_credentials", "--batch-size", "2", stdout=out)
    assert "re-encrypted 3 credential(s); 1 already used the first key" in out.getvalue()
    for c in creds:
        stored = raw_secret_column(c.pk)
        assert stored != before[c.pk]
        Fernet(new.encode()).decrypt(stored.encode())  # readable with the new key alone

    # The old key can now be dropped.
    settings.WECONNECT_ENCRYPTION_KEYS = [new]
    for i in range(3):
        assert credential_resolve(owner_id=user.pk, name=f"c{i}").fields == {
            "token": f"{SECRET}-{i}"
        }
    out = io.StringIO()
    call_command("reencrypt_credentials", stdout=out)
    assert "re-encrypted 0 credential(s); 4 already used the first key" in out.getvalue()


def test_key_removed_too_soon_is_a_clear_error(user, settings):
    old = Fernet.generate_key().decode()
    settings.WECONNECT_ENCRYPTION_KEYS = [old]
    credential_create(owner=user, name="c", kind="bearer", data={"token": SECRET})
    settings.WECONNECT_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(NonRetryableError, match="cannot be read.*WECONNECT_ENCRYPTION_KEYS"):
        credential_resolve(owner_id=user.pk, name="c")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="WECONNECT_ENCRYPTION_KEYS"):
        call_command("reencrypt_credentials", stdout=io.StringIO())


def test_no_keys_without_debug_names_the_variable(user, settings):
    settings.WECONNECT_ENCRYPTION_KEYS = []
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="WECONNECT_ENCRYPTION_KEYS"):
        crypto.encrypt({"token": "x"})


def test_debug_without_keys_derives_a_key_from_secret_key(user, settings):
    settings.WECONNECT_ENCRYPTION_KEYS = []
    settings.DEBUG = True
    cred = credential_create(owner=user, name="dev", kind="bearer", data={"token": SECRET})
    stored = raw_secret_column(cred.pk)
    assert SECRET not in stored
    assert Fernet(crypto.development_key(settings.SECRET_KEY)).decrypt(stored.encode())
    assert crypto.development_key("other") != crypto.development_key(settings.SECRET_KEY)


# --- the API: write-only, validation, isolation ---------------------------------------------


def test_crud_never_shows_the_secret(api, user):
    r = create(api, data={"token": SECRET})
    assert r.status_code == 201
    doc = r.json()
    assert set(doc) == {"id", "name", "kind", "owner", "used_by", "created_at", "updated_at"}
    assert doc["owner"] == user.pk and doc["kind"] == "bearer" and doc["used_by"] == []
    cid = doc["id"]
    responses = [
        r,
        api.get("/api/credentials/"),
        api.get(f"/api/credentials/{cid}/"),
        api.put(
            f"/api/credentials/{cid}/",
            {
                "name": "gh",
                "kind": "header",
                "data": {"header_name": "X-Api-Key", "value": SECRET + "-2"},
            },
            format="json",
        ),
    ]
    for resp in responses:
        assert resp.status_code in (200, 201), resp.content
        assert SECRET not in resp.content.decode() and "X-Api-Key" not in resp.content.decode()
    listed = responses[1].json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == cid
    assert responses[3].json()["kind"] == "header"
    assert credential_resolve(owner_id=user.pk, name="gh").headers() == {"X-Api-Key": SECRET + "-2"}
    assert api.patch(f"/api/credentials/{cid}/", {"name": "x"}, format="json").status_code == 405
    assert api.delete(f"/api/credentials/{cid}/").status_code == 204
    assert not Credential.objects.filter(pk=cid).exists()


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        ("bearer", {}, "token"),
        ("bearer", {"token": ""}, "token"),
        ("bearer", {"token": 5}, "token"),
        ("bearer", {"token": "a\r\nX-Evil: 1"}, "token"),
        ("bearer", {"token": "t", "extra": "x"}, "extra"),
        ("basic", {"username": "u"}, "password"),
        ("basic", {"password": "p"}, "username"),
        ("basic", {"username": "a:b", "password": "p"}, "username"),
        ("header", {"value": "v"}, "header_name"),
        ("header", {"header_name": "X-Key"}, "value"),
        ("header", {"header_name": "bad header", "value": "v"}, "header_name"),
        ("header", {"header_name": "Host", "value": "v"}, "header_name"),
        ("generic", {"key": 1}, "key"),
        ("generic", {"not-an-identifier": "v"}, "not-an-identifier"),
    ],
)
def test_kind_specific_fields_are_required(api, kind, data, field):
    r = create(api, kind=kind, data=data)
    assert r.status_code == 400, r.content
    assert field in r.json()["data"], r.json()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "gh", "kind": "bearer"}, "data"),
        ({"name": "gh", "kind": "oauth", "data": {}}, "kind"),
        ({"name": "has space", "kind": "bearer", "data": {"token": "t"}}, "name"),
        ({"name": "x" * 65, "kind": "bearer", "data": {"token": "t"}}, "name"),
        ({"kind": "bearer", "data": {"token": "t"}}, "name"),
        ({"name": "gh", "kind": "generic", "data": {}}, "data"),
        ({"name": "gh", "kind": "generic", "data": ["a"]}, "data"),
        ({"name": "gh", "kind": "bearer", "data": "token"}, "data"),
    ],
)
def test_bad_documents_are_400_naming_the_field(api, payload, field):
    r = api.post("/api/credentials/", payload, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()


def test_non_object_body_and_malformed_json_are_400(api):
    assert api.post("/api/credentials/", [1, 2], format="json").status_code == 400
    r = api.post("/api/credentials/", "{not json", content_type="application/json")
    assert r.status_code == 400


def test_duplicate_name_is_400_per_owner(api, other_api):
    assert create(api).status_code == 201
    r = create(api)
    assert r.status_code == 400 and "already exists" in r.json()["name"][0]
    assert create(other_api).status_code == 201  # the same name for another owner is fine


def test_owner_isolation(api, other_api, user, other_user):
    mine = create(api).json()["id"]
    theirs = create(other_api, name="theirs").json()["id"]
    assert [c["id"] for c in api.get("/api/credentials/").json()["results"]] == [mine]
    for method in ("get", "delete"):
        assert getattr(api, method)(f"/api/credentials/{theirs}/").status_code == 404
    r = api.put(
        f"/api/credentials/{theirs}/",
        {"name": "x", "kind": "bearer", "data": {"token": "t"}},
        format="json",
    )
    assert r.status_code == 404
    assert Credential.objects.get(pk=theirs).name == "theirs"


def test_unauthenticated_is_401():
    from rest_framework.test import APIClient

    assert APIClient().get("/api/credentials/").status_code == 401


# --- references from workflows ----------------------------------------------------------------


def test_references_are_found_in_credential_key_and_templates():
    config = {
        "credential": "gh",
        "url": "https://x/{{ credentials.stripe.key }}",
        "headers": {"X-A": "{{ credentials['slack'].token }}", "X-B": "{{credentials . spaced.v}}"},
        "json": {"nested": ['{{ credentials["quoted"].f }}', "credentials.not_a_template"]},
    }
    assert credential_references(config) >= {"gh", "stripe", "slack", "spaced", "quoted"}


def test_saving_a_workflow_with_a_missing_credential_is_400(api, other_api):
    assert create(other_api, name="theirs").status_code == 201  # another owner's does not count
    doc = {
        "name": "wf",
        "nodes": [
            http_node("a", credential="nope"),
            http_node("b", headers={"X": "{{ credentials.theirs.token }}"}),
            node("c", "unknown_type"),
        ],
    }
    r = api.post("/api/workflows/", doc, format="json")
    assert r.status_code == 400, r.content
    problems = " ".join(r.json()["nodes"])
    assert "node 'a': credential 'nope' does not exist" in problems
    assert "node 'b': credential 'theirs' does not exist" in problems
    assert "unknown type" in problems  # reported together with the graph's problems
    assert create(api, name="nope").status_code == 201
    assert create(api, name="theirs").status_code == 201
    doc["nodes"] = doc["nodes"][:2]
    assert api.post("/api/workflows/", doc, format="json").status_code == 201


def test_used_by_and_delete_refused_while_in_use(api, user):
    cid = create(api, name="gh").json()["id"]
    create(api, name="unused")
    r = api.post(
        "/api/workflows/", {"name": "Sync", "nodes": [http_node(credential="gh")]}, format="json"
    )
    assert r.status_code == 201, r.content
    wf = r.json()["id"]
    r2 = api.post(
        "/api/workflows/",
        {
            "name": "Templated",
            "nodes": [
                node("t", "transform", config={"fields": {"auth": "{{ credentials.gh.token }}"}})
            ],
        },
        format="json",
    )
    assert r2.status_code == 201, r2.content

    used = {w["name"] for w in api.get(f"/api/credentials/{cid}/").json()["used_by"]}
    assert used == {"Sync", "Templated"}
    listed = {c["name"]: c["used_by"] for c in api.get("/api/credentials/").json()["results"]}
    assert {w["id"] for w in listed["gh"]} == {wf, r2.json()["id"]} and listed["unused"] == []

    r = api.delete(f"/api/credentials/{cid}/")
    assert r.status_code == 409
    assert "Sync" in r.json()["detail"] and "Templated" in r.json()["detail"]
    assert {w["id"] for w in r.json()["workflows"]} == {wf, r2.json()["id"]}
    assert Credential.objects.filter(pk=cid).exists()
    # Renaming it would break the same workflows.
    r = api.put(
        f"/api/credentials/{cid}/",
        {"name": "renamed", "kind": "bearer", "data": {"token": "t"}},
        format="json",
    )
    assert r.status_code == 409
    # Replacing the secret under the same name is fine.
    r = api.put(
        f"/api/credentials/{cid}/",
        {"name": "gh", "kind": "bearer", "data": {"token": "t2"}},
        format="json",
    )
    assert r.status_code == 200

    # Once no workflow refers to it, it can go.
    assert api.delete(f"/api/workflows/{wf}/").status_code == 204
    assert (
        api.put(
            f"/api/workflows/{r2.json()['id']}/",
            {"name": "Templated", "nodes": [node("t")]},
            format="json",
        ).status_code
        == 200
    )
    assert api.get(f"/api/credentials/{cid}/").json()["used_by"] == []
    assert api.delete(f"/api/credentials/{cid}/").status_code == 204


def test_resolve_missing_credential_is_non_retryable(user, other_user):
    credential_create(owner=other_user, name="theirs", kind="bearer", data={"token": SECRET})
    with pytest.raises(NonRetryableError, match="credential 'theirs' does not exist") as info:
        credential_resolve(owner_id=user.pk, name="theirs")
    assert info.value.retryable is False and info.value.error_type == "CredentialNotFound"


# --- redaction --------------------------------------------------------------------------------


def test_redaction_by_value_recursive_in_strings_and_wire_forms(user):
    credential_create(
        owner=user, name="b", kind="basic", data={"username": "svc-user", "password": "p@ss w/rd"}
    )
    credential_create(owner=user, name="t", kind="bearer", data={"token": SECRET})
    with redaction.scope() as secrets:
        credential_resolve(owner_id=user.pk, name="b")
        TemplateCredentials(user.pk)["t"]
    import base64

    basic = base64.b64encode(b"svc-user:p@ss w/rd").decode()
    doc = {
        "headers": {"authorization": f"Basic {basic}", "x-token": f"Bearer {SECRET}"},
        "url": "https://api/x?pw=p%40ss%20w%2Frd&q=p%40ss+w%2Frd",
        "list": [SECRET, {"deep": [f"..{SECRET}.."]}, 42, None],
        SECRET: "as a key",
        "json_text": json.dumps({"pw": "p@ss w/rd"}),
    }
    out = secrets.redact(doc)
    text = json.dumps(out)
    for leaked in (SECRET, "p@ss w/rd", "p%40ss%20w%2Frd", "p%40ss+w%2Frd", basic, "svc-user"):
        assert leaked not in text, leaked
    assert out["list"][2:] == [42, None] and out["headers"]["x-token"] == "Bearer ***"
    assert "***" in out  # the key was redacted too


def test_log_lines_are_redacted_while_a_run_uses_a_credential(user):
    credential_create(owner=user, name="t", kind="bearer", data={"token": SECRET})
    log = logging.getLogger("weconnect.engine")
    # The console handler settings.LOGGING configured (with its filter and formatter), pointed
    # at a buffer for the test.
    (handler,) = [
        h
        for h in logging.getLogger("weconnect").handlers
        if type(h) is logging.StreamHandler
        and any(isinstance(f, redaction.RedactingFilter) for f in h.filters)
    ]
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        run_and_log(user, log)
    finally:
        handler.setStream(previous)
    err = buffer.getvalue()
    assert SECRET not in err
    assert "calling https://api/?key=***" in err and "header=Bearer ***" in err
    assert "RuntimeError: server refused token ***" in err
    assert "after the run: not a secret" in err


def run_and_log(user, log):
    with redaction.scope():
        credential_resolve(owner_id=user.pk, name="t")
        log.warning("calling https://api/?key=%s", SECRET, extra={"header": f"Bearer {SECRET}"})
        try:
            raise RuntimeError(f"server refused token {SECRET}")
        except RuntimeError:
            log.exception("node raised")
    log.warning("after the run: %s", "not a secret")


def test_admin_shows_credentials_without_secrets(client, django_user_model, user):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    cred = credential_create(owner=user, name="gh", kind="bearer", data={"token": SECRET})
    client.force_login(admin)
    listing = client.get("/admin/executions/credential/")
    detail = client.get(f"/admin/executions/credential/{cred.pk}/change/")
    assert listing.status_code == 200 and detail.status_code == 200
    for page in (listing, detail):
        body = page.content.decode()
        assert "gh" in body and SECRET not in body and raw_secret_column(cred.pk) not in body


def test_api_without_keys_is_503_naming_the_variable(api, settings):
    settings.WECONNECT_ENCRYPTION_KEYS = []
    settings.DEBUG = False
    r = create(api)
    assert r.status_code == 503
    assert "WECONNECT_ENCRYPTION_KEYS" in r.json()["detail"]
    assert not Credential.objects.exists()


def test_deploy_check_reports_missing_keys(settings):
    from django.core.checks import run_checks

    settings.WECONNECT_ENCRYPTION_KEYS = []
    settings.DEBUG = False
    ids = {m.id for m in run_checks(include_deployment_checks=True, tags=["security"])}
    assert "weconnect.E001" in ids
    settings.WECONNECT_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    ids = {m.id for m in run_checks(include_deployment_checks=True, tags=["security"])}
    assert not ids & {"weconnect.E001", "weconnect.W001"}
