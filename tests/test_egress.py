"""The egress policy and the client that enforces it, against real local servers."""

from __future__ import annotations

import datetime
import ssl
import time
from http.server import BaseHTTPRequestHandler

import httpcore
import pytest

from executions import egress
from executions.egress import EgressDenied, EgressPolicy, TooManyRedirects
from tests.support.http import LocalServer

METADATA = "http://169.254.169.254/latest/meta-data/"


class RecordingBackend(httpcore.SyncBackend):
    """httpcore's own sync backend, noting where each socket really connects."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host, port, *args, **kwargs):
        self.connects.append((host, port))
        return super().connect_tcp(host, port, *args, **kwargs)


class FixedResolver:
    """A resolver hook with scripted answers: the n-th call gets answers[min(n, last)]."""

    def __init__(self, *answers: list[str]):
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]


def get(url: str, *, policy=None, resolver=None, backend=None, **send_options):
    with egress.build_client(
        timeout=5, policy=policy or EgressPolicy(), resolver=resolver, inner_backend=backend
    ) as client:
        return egress.send(client, client.build_request("GET", url), stream=False, **send_options)


# --- the policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "address", "allowed", "rule"),
    [
        ({}, "169.254.169.254", False, "169.254.0.0/16"),
        ({}, "169.254.10.1", False, "169.254.0.0/16"),
        ({}, "fe80::1", False, "fe80::/10"),
        ({}, "fd00:ec2::254", False, "fd00:ec2::254/128"),
        ({}, "::ffff:169.254.169.254", False, "169.254.0.0/16"),
        ({}, "93.184.216.34", True, None),
        ({}, "127.0.0.1", True, None),
        ({}, "10.1.2.3", True, None),
        ({"deny_private": True}, "127.0.0.1", False, "127.0.0.0/8"),
        ({"deny_private": True}, "10.1.2.3", False, "10.0.0.0/8"),
        ({"deny_private": True}, "172.20.0.1", False, "172.16.0.0/12"),
        ({"deny_private": True}, "192.168.1.1", False, "192.168.0.0/16"),
        ({"deny_private": True}, "::1", False, "::1/128"),
        ({"deny_private": True}, "fc00::1", False, "fc00::/7"),
        ({"deny_private": True}, "0.0.0.0", False, "0.0.0.0/8"),
        ({"deny_private": True}, "93.184.216.34", True, None),
        ({"deny_private": True}, "169.254.169.254", False, "169.254.0.0/16"),
        # Explicitly allowing the metadata address is possible; a blanket ALLOW is not enough.
        ({"allow": ["169.254.169.254/32"]}, "169.254.169.254", True, "WECONNECT_HTTP_ALLOW"),
        ({"allow": ["0.0.0.0/0"]}, "169.254.169.254", False, "169.254.0.0/16"),
        # ALLOW opens one private network under DENY_PRIVATE, not the others.
        ({"deny_private": True, "allow": ["10.1.0.0/16"]}, "10.1.2.3", True, "10.1.0.0/16"),
        ({"deny_private": True, "allow": ["10.1.0.0/16"]}, "10.2.0.1", False, "10.0.0.0/8"),
        (
            {"deny_private": True, "allow": ["127.0.0.0/8"]},
            "127.0.0.1",
            True,
            "WECONNECT_HTTP_ALLOW",
        ),
        # DENY refuses; a longer ALLOW inside it wins; on equal prefixes DENY wins.
        (
            {"deny": ["93.184.216.0/24"]},
            "93.184.216.34",
            False,
            "WECONNECT_HTTP_DENY entry 93.184.216.0/24",
        ),
        (
            {"deny": ["0.0.0.0/0", "::/0"], "allow": ["93.184.216.34/32"]},
            "93.184.216.34",
            True,
            None,
        ),
        (
            {"deny": ["0.0.0.0/0", "::/0"], "allow": ["93.184.216.34/32"]},
            "8.8.8.8",
            False,
            "0.0.0.0/0",
        ),
        (
            {"deny": ["10.0.0.0/8"], "allow": ["10.0.0.0/8"]},
            "10.0.0.1",
            False,
            "WECONNECT_HTTP_DENY",
        ),
        ({"deny": ["10.0.0.0/8"], "allow": ["10.9.9.9/32"]}, "10.9.9.9", True, None),
        ({"deny": ["2001:db8::/32"]}, "2001:db8::1", False, "2001:db8::/32"),
    ],
)
def test_policy_decisions(policy, address, allowed, rule):
    got, why = EgressPolicy(**policy).decide(address)
    assert got is allowed
    if rule is not None:
        assert rule in why


def test_policy_reads_settings(settings):
    settings.WECONNECT_HTTP_DENY_PRIVATE = True
    settings.WECONNECT_HTTP_ALLOW = ["10.1.0.0/16"]
    settings.WECONNECT_HTTP_DENY = ["93.184.216.0/24"]
    policy = EgressPolicy.from_settings()
    assert policy.decide("127.0.0.1")[0] is False
    assert policy.decide("10.1.0.5")[0] is True
    assert policy.decide("93.184.216.34")[0] is False


# --- the client ---------------------------------------------------------------------------------


def test_metadata_refused_by_default_before_connecting():
    backend = RecordingBackend()
    started = time.monotonic()
    for url in (
        METADATA,
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
    ):
        with pytest.raises(EgressDenied) as info:
            get(url, policy=EgressPolicy.from_settings(), backend=backend)
        assert info.value.retryable is False
        assert "always refused unless WECONNECT_HTTP_ALLOW lists it" in info.value.message
    assert backend.connects == []  # refused before any socket was opened
    assert time.monotonic() - started < 2


def test_private_ranges_refused_when_on_and_allowed_when_off(http_server):
    assert get(http_server.url("/ok")).status_code == 200
    with pytest.raises(
        EgressDenied, match=r"127\.0\.0\.0/8 \(refused by WECONNECT_HTTP_DENY_PRIVATE=true\)"
    ):
        get(http_server.url("/refused"), policy=EgressPolicy(deny_private=True))
    assert http_server.paths() == ["/ok"]


def test_allow_and_deny_lists(http_server):
    with pytest.raises(EgressDenied, match="WECONNECT_HTTP_DENY entry 127.0.0.1/32"):
        get(http_server.url("/a"), policy=EgressPolicy(deny=["127.0.0.1/32"]))
    opened = EgressPolicy(deny_private=True, allow=["127.0.0.1/32"])
    assert get(http_server.url("/b"), policy=opened).status_code == 200
    allow_list = EgressPolicy(deny=["0.0.0.0/0", "::/0"], allow=["127.0.0.1/32"])
    assert get(http_server.url("/c"), policy=allow_list).status_code == 200
    assert http_server.paths() == ["/b", "/c"]


def test_redirect_to_refused_address_is_refused(http_server):
    with pytest.raises(EgressDenied, match="169.254.0.0/16"):
        get(http_server.url(f"/redirect?to={METADATA}"))
    # A private address reached by redirect, when only the first hop is allowed.
    policy = EgressPolicy(deny_private=True, allow=["127.0.0.1/32"])
    with pytest.raises(EgressDenied, match="127.0.0.0/8"):
        get(http_server.url(f"/redirect?to=http://127.0.0.2:{http_server.port}/ok"), policy=policy)
    assert http_server.paths() == ["/redirect", "/redirect"]


def test_redirects_followed_and_capped(http_server, second_server):
    target = second_server.url("/echo")
    r = get(http_server.url(f"/redirect?to={target}"))
    assert r.status_code == 200 and r.json()["path"] == "/echo"
    assert [h.status_code for h in r.history] == [302]
    loop = http_server.url("/redirect?to=/redirect%3Fto%3D/ok")
    with pytest.raises(TooManyRedirects, match="more than 1 redirects"):
        get(loop, max_redirects=1)
    assert get(loop, max_redirects=2).status_code == 200
    # Not following returns the redirect itself.
    r = get(http_server.url(f"/redirect?to={target}"), follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == target


def test_redirect_methods_and_bodies(http_server):
    with egress.build_client(timeout=5, policy=EgressPolicy()) as client:
        for status, method, body in (
            ("303", "GET", ""),
            ("302", "GET", ""),
            ("307", "POST", "payload"),
            ("308", "POST", "payload"),
        ):
            url = http_server.url(f"/redirect?status={status}&to=/echo")
            r = egress.send(
                client, client.build_request("POST", url, content=b"payload"), stream=False
            )
            assert (r.json()["method"], r.json()["body"]) == (method, body), status


def test_credentials_do_not_follow_a_redirect_to_another_origin(http_server, second_server):
    headers = {"Authorization": "Bearer tok-1", "X-Api-Key": "key-1", "X-Plain": "p"}
    with egress.build_client(timeout=5, policy=EgressPolicy()) as client:
        same = egress.send(
            client,
            client.build_request("GET", http_server.url("/redirect?to=/echo"), headers=headers),
            stream=False,
            origin_bound_headers=["X-Api-Key"],
        ).json()["headers"]
        other = egress.send(
            client,
            client.build_request(
                "GET",
                http_server.url(f"/redirect?to={second_server.url('/echo')}"),
                headers=headers,
            ),
            stream=False,
            origin_bound_headers=["X-Api-Key"],
        ).json()["headers"]
    assert same["authorization"] == "Bearer tok-1" and same["x-api-key"] == "key-1"
    assert "authorization" not in other and "x-api-key" not in other and other["x-plain"] == "p"
    assert other["host"] == f"127.0.0.1:{second_server.port}"


def test_host_name_resolving_to_refused_address_is_refused():
    backend = RecordingBackend()
    with pytest.raises(EgressDenied, match=r"metadata\.test \(169\.254\.169\.254\)"):
        get("http://metadata.test/", resolver=FixedResolver(["169.254.169.254"]), backend=backend)
    # Every answer is checked: one refused address among allowed ones refuses the name.
    with pytest.raises(EgressDenied, match="169.254.0.0/16"):
        get(
            "http://mixed.test/",
            resolver=FixedResolver(["127.0.0.1", "169.254.169.254"]),
            backend=backend,
        )
    assert backend.connects == []


def test_localhost_through_the_real_resolver(http_server):
    assert egress.system_resolver("localhost", 80)
    with pytest.raises(EgressDenied, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        get(http_server.url("/x", host="localhost"), policy=EgressPolicy(deny_private=True))
    r = get(http_server.url("/ok", host="localhost"))
    assert r.status_code == 200 and r.json()["host"] == f"localhost:{http_server.port}"


def test_connection_goes_to_the_checked_address(http_server):
    # DNS rebinding: the first answer is allowed, every later one points at the metadata
    # service. The connection must use the first (checked) answer, resolving only once.
    resolver = FixedResolver(["127.0.0.1"], ["169.254.169.254"])
    backend = RecordingBackend()
    r = get(f"http://rebind.test:{http_server.port}/echo", resolver=resolver, backend=backend)
    assert r.status_code == 200
    assert resolver.calls == ["rebind.test"]
    assert backend.connects == [("127.0.0.1", http_server.port)]
    assert http_server.requests[-1]["headers"]["host"] == f"rebind.test:{http_server.port}"
    # The next connection resolves again and gets the refused answer: refused, not connected.
    with pytest.raises(EgressDenied, match=r"rebind\.test \(169\.254\.169\.254\)"):
        get(f"http://rebind.test:{http_server.port}/echo", resolver=resolver, backend=backend)
    assert backend.connects == [("127.0.0.1", http_server.port)]

    # The other way round: a refused first answer is not rescued by a later, allowed one.
    flip = FixedResolver(["169.254.169.254"], ["127.0.0.1"])
    with pytest.raises(EgressDenied):
        get(f"http://flip.test:{http_server.port}/", resolver=flip, backend=backend)
    assert flip.calls == ["flip.test"] and len(backend.connects) == 1


def test_a_resolver_answer_that_is_not_an_address_is_refused():
    with pytest.raises(EgressDenied, match="not an IP address"):
        get("http://odd.test/", resolver=FixedResolver(["not-an-ip"]))


def test_unresolvable_name_is_a_connect_error():
    import httpx

    def fail(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.test"):
        get("http://nowhere.test/", resolver=fail)


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server with a certificate for tls.test only, recording the SNI it receives."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("tls.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    seen_sni: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    server_ctx.sni_callback = lambda sock, sni, ctx: seen_sni.append(sni)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.headers["Host"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    wrap = lambda sock: server_ctx.wrap_socket(sock, server_side=True)  # noqa: E731
    with LocalServer(Handler, wrap_socket=wrap) as httpd:
        client_ctx = ssl.create_default_context(cafile=str(cert_file))
        yield httpd.port, client_ctx, seen_sni


def test_tls_keeps_the_name_for_sni_and_certificate_check(tls_server):
    port, client_ctx, seen_sni = tls_server
    backend = RecordingBackend()
    with egress.build_client(
        timeout=5,
        policy=EgressPolicy(),
        resolver=FixedResolver(["127.0.0.1"]),
        inner_backend=backend,
        verify=client_ctx,
    ) as client:
        r = egress.send(
            client, client.build_request("GET", f"https://tls.test:{port}/"), stream=False
        )
    assert r.status_code == 200 and r.text == f"tls.test:{port}"
    assert seen_sni == ["tls.test"]  # the certificate was checked against the name, not the IP
    assert backend.connects == [("127.0.0.1", port)]
