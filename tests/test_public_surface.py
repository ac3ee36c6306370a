"""What answers without authentication, and what a client may claim: X-Forwarded-Proto is
trusted only when WECONNECT_TRUST_PROXY_SSL_HEADER says so, and /api/schema/ and /api/docs/
are public only when WECONNECT_PUBLIC_API_DOCS says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.support.workflows import node, workflow_doc

pytestmark = [pytest.mark.django_db]

ROOT = Path(__file__).resolve().parent.parent


def settings_in_a_fresh_process(*names: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WECONNECT_") and k != "DEBUG"}
    base.update(SECRET_KEY="x" * 50, DJANGO_SETTINGS_MODULE="weconnect.settings", **env)
    code = "import django; django.setup(); from django.conf import settings as s; " + "; ".join(
        f"print(repr(s.{n}))" for n in names
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_proxy_header_is_off_by_default_and_a_setting():
    assert settings_in_a_fresh_process("SECURE_PROXY_SSL_HEADER") == ["None"]
    assert settings_in_a_fresh_process(
        "SECURE_PROXY_SSL_HEADER", WECONNECT_TRUST_PROXY_SSL_HEADER="true"
    ) == ["('HTTP_X_FORWARDED_PROTO', 'https')"]


def test_a_client_cannot_claim_https_by_default(api):
    doc = workflow_doc([node("a")], webhook_enabled=True)
    res = api.post("/api/workflows/", doc, format="json", HTTP_X_FORWARDED_PROTO="https")
    assert res.status_code == 201
    assert res.json()["webhook_url"].startswith("http://testserver/")


def test_a_trusted_proxy_header_is_honoured(api, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    doc = workflow_doc([node("a")], webhook_enabled=True)
    res = api.post("/api/workflows/", doc, format="json", HTTP_X_FORWARDED_PROTO="https")
    assert res.json()["webhook_url"].startswith("https://testserver")


def test_api_docs_public_only_with_debug_by_default():
    assert settings_in_a_fresh_process("WECONNECT_PUBLIC_API_DOCS") == ["False"]
    assert settings_in_a_fresh_process("WECONNECT_PUBLIC_API_DOCS", DEBUG="true") == ["True"]
    assert settings_in_a_fresh_process(
        "WECONNECT_PUBLIC_API_DOCS", WECONNECT_PUBLIC_API_DOCS="true"
    ) == ["True"]


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_api_docs_need_authentication_unless_public(api, settings, path):
    assert settings.WECONNECT_PUBLIC_API_DOCS is False  # the test run is DEBUG off
    assert APIClient().get(path).status_code == 401
    assert api.get(path).status_code == 200
    settings.WECONNECT_PUBLIC_API_DOCS = True
    assert APIClient().get(path).status_code == 200
