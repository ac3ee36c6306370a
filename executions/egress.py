"""Outbound HTTP under an egress policy: which addresses a workflow may reach.

Every connection resolves its host name once, checks every address the name resolved to
against the policy, and connects to one of exactly those addresses. Checking a name and then
letting the HTTP client resolve it again would be open to DNS rebinding (a short-TTL name that
answers with a public address for the check and 169.254.169.254 for the connect), so the
check lives in the network backend under httpcore: the socket goes to the checked IP, while
the URL, and so the Host header and the TLS server name (SNI and certificate check), keep the
name. Redirects are followed here hop by hop (each new origin is a new, checked connection).

The policy (docs/security.md), in order of precedence:

- Among the entries of ``WECONNECT_HTTP_ALLOW`` and ``WECONNECT_HTTP_DENY`` and the built-in
  ranges below that contain the address, the longest prefix wins.
- On a tie, an explicit DENY beats an explicit ALLOW, which beats a built-in range.
- Built-in: cloud metadata and link-local ranges are always refused; loopback and private
  ranges are refused when ``WECONNECT_HTTP_DENY_PRIVATE`` is true.
- An address nothing matches is allowed.

So ``WECONNECT_HTTP_ALLOW=169.254.169.254/32`` reaches the metadata service on purpose,
``ALLOW=10.1.0.0/16`` opens one private network under DENY_PRIVATE, and ``DENY=0.0.0.0/0,::/0``
with a few ALLOW entries is an allow-list. Nothing here reads proxies from the environment:
a proxy would make the checked address the proxy's, not the destination's.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from django.conf import settings

from executions.errors import NonRetryableError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses to consider, in the order to try them.
Resolver = Callable[[str, int], Sequence[str]]

METADATA_RANGES: tuple[str, ...] = (
    "169.254.0.0/16",  # IPv4 link-local, with 169.254.169.254 (AWS, GCP, Azure, OpenStack...)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
)
PRIVATE_RANGES: tuple[str, ...] = (
    "0.0.0.0/8",  # "this host": connecting to 0.0.0.0 reaches loopback
    "10.0.0.0/8",
    "100.64.0.0/10",  # carrier-grade NAT, used for cluster-internal networks
    "127.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "::/128",
    "::1/128",
    "fc00::/7",  # unique local addresses
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=5)
# Never carried to another origin by a redirect.
_ORIGIN_BOUND_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class EgressDenied(NonRetryableError):
    """The destination is refused by the egress policy (not retried: it would be again)."""

    def __init__(self, message: str, *, host: str, address: str | None, rule: str):
        super().__init__(
            message,
            error_type="EgressDenied",
            details={"host": host, "address": address, "rule": rule},
        )
        self.host, self.address, self.rule = host, address, rule


class TooManyRedirects(NonRetryableError):
    def __init__(self, message: str):
        super().__init__(message, error_type="TooManyRedirects")


@dataclass(frozen=True)
class _Rule:
    network: Network
    allow: bool
    rank: int  # tie-break on equal prefixes: explicit deny 2 > explicit allow 1 > built-in 0
    description: str


def _address(text: str) -> Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return ip


class EgressPolicy:
    def __init__(
        self,
        *,
        deny_private: bool = False,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
    ):
        rules: list[_Rule] = []
        for cidr in METADATA_RANGES:
            rules.append(
                _Rule(
                    ipaddress.ip_network(cidr),
                    False,
                    0,
                    f"cloud metadata / link-local range {cidr} (always refused unless WECONNECT_HTTP_ALLOW lists it)",
                )
            )
        if deny_private:
            for cidr in PRIVATE_RANGES:
                rules.append(
                    _Rule(
                        ipaddress.ip_network(cidr),
                        False,
                        0,
                        f"loopback / private range {cidr} (refused by WECONNECT_HTTP_DENY_PRIVATE=true)",
                    )
                )
        for cidr in allow:
            net = ipaddress.ip_network(cidr, strict=False)
            rules.append(_Rule(net, True, 1, f"WECONNECT_HTTP_ALLOW entry {net}"))
        for cidr in deny:
            net = ipaddress.ip_network(cidr, strict=False)
            rules.append(_Rule(net, False, 2, f"WECONNECT_HTTP_DENY entry {net}"))
        self.rules = tuple(rules)

    @classmethod
    def from_settings(cls) -> EgressPolicy:
        return cls(
            deny_private=settings.WECONNECT_HTTP_DENY_PRIVATE,
            allow=settings.WECONNECT_HTTP_ALLOW,
            deny=settings.WECONNECT_HTTP_DENY,
        )

    def decide(self, address: str) -> tuple[bool, str | None]:
        """(allowed, the rule that decided, or None when no rule matched)."""
        ip = _address(address)
        best: _Rule | None = None
        for rule in self.rules:
            if ip.version == rule.network.version and ip in rule.network:
                if best is None or (rule.network.prefixlen, rule.rank) > (
                    best.network.prefixlen,
                    best.rank,
                ):
                    best = rule
        if best is None:
            return True, None
        return best.allow, best.description

    def enforce(self, host: str, address: str) -> None:
        try:
            allowed, rule = self.decide(address)
        except ValueError:
            allowed, rule = False, f"an answer that is not an IP address ({address!r})"
        if not allowed:
            shown = host if host == address else f"{host} ({address})"
            raise EgressDenied(
                f"egress refused: {shown} is in {rule}", host=host, address=address, rule=rule or ""
            )


def system_resolver(host: str, port: int) -> list[str]:
    """The production resolver: getaddrinfo, every address, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to checked addresses of the requested host."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ):
        self.policy = policy
        self.resolver = resolver or system_resolver
        self.inner = inner or httpcore.SyncBackend()

    def _addresses(self, host: str, port: int) -> list[str]:
        bare = host.strip("[]")
        try:
            _address(bare)
            return [bare]  # an IP literal: nothing to resolve
        except ValueError:
            pass
        try:
            addresses = list(self.resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        # Resolve once; every answer must pass, so a name cannot mix a public address with a
        # refused one and win on the retry order.
        addresses = self._addresses(host, port)
        for address in addresses:
            self.policy.enforce(host, address)
        last: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise EgressDenied(
            "egress refused: unix sockets are not reachable from workflows",
            host=path,
            address=None,
            rule="unix socket",
        )

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


@functools.lru_cache(maxsize=2)
def _ssl_context(verify: bool) -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; one context per process serves every
    # client (an SSLContext may be shared between connections and threads).
    return httpx.create_ssl_context(verify=verify)


class EgressTransport(httpx.HTTPTransport):
    """httpx's default transport with the guarded network backend underneath.

    ``httpx.HTTPTransport`` does not take a network backend, so the connection pool it would
    build is built here instead (``handle_request`` of the base class uses ``self._pool``)."""

    def __init__(
        self,
        *,
        policy: EgressPolicy | None = None,
        resolver: Resolver | None = None,
        inner_backend: httpcore.NetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = _LIMITS,
    ):
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else _ssl_context(verify)
        self.backend = GuardedNetworkBackend(
            policy or EgressPolicy.from_settings(), resolver, inner_backend
        )
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )


def build_client(
    *,
    timeout: httpx.Timeout | float = 30.0,
    policy: EgressPolicy | None = None,
    resolver: Resolver | None = None,
    inner_backend: httpcore.NetworkBackend | None = None,
    verify: ssl.SSLContext | bool = True,
    **client_options: Any,
) -> httpx.Client:
    """An httpx client that can only reach what the egress policy allows. Redirects are not
    followed by the client: use :func:`send`, which checks each hop."""
    return httpx.Client(
        transport=EgressTransport(
            policy=policy, resolver=resolver, inner_backend=inner_backend, verify=verify
        ),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        **client_options,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _redirect_request(
    request: httpx.Request, response: httpx.Response, origin_bound: frozenset[str]
) -> httpx.Request:
    try:
        url = request.url.join(response.headers["location"])
    except httpx.InvalidURL as exc:
        raise NonRetryableError(
            f"redirect to an invalid location: {exc}", error_type="InvalidRedirect"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise NonRetryableError(
            f"redirect to an unsupported location {str(url)[:200]!r}", error_type="InvalidRedirect"
        )
    method = request.method
    status = response.status_code
    # What browsers (and httpx) do: 303 turns into GET, and so do 301/302 after a POST.
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
    keep_body = method == request.method and status in (307, 308)
    headers = httpx.Headers(request.headers)
    # A request built with stream= gets no automatic headers, so Host is set here.
    headers["Host"] = url.netloc.decode("ascii")
    if not keep_body:
        for name in ("content-length", "content-type", "transfer-encoding"):
            headers.pop(name, None)
    if _origin(url) != _origin(request.url):
        # Credentials go to the origin they were meant for, never on to where it redirects.
        for name in list(headers.keys()):
            if name.lower() in origin_bound:
                headers.pop(name, None)
    return httpx.Request(
        method,
        url,
        headers=headers,
        stream=request.stream if keep_body else None,
        extensions=request.extensions,
    )


def send(
    client: httpx.Client,
    request: httpx.Request,
    *,
    stream: bool = True,
    follow_redirects: bool = True,
    max_redirects: int | None = None,
    origin_bound_headers: Iterable[str] = (),
) -> httpx.Response:
    """Send ``request``, following redirects one checked hop at a time (at most
    ``max_redirects``, default WECONNECT_HTTP_MAX_REDIRECTS). ``origin_bound_headers`` names
    extra headers (a credential's) dropped when a redirect leaves the origin, as Authorization
    and Cookie always are. The final response is returned streaming unless ``stream=False``;
    ``response.history`` lists the redirects followed."""
    limit = settings.WECONNECT_HTTP_MAX_REDIRECTS if max_redirects is None else max_redirects
    bound = _ORIGIN_BOUND_HEADERS | {h.lower() for h in origin_bound_headers}
    history: list[httpx.Response] = []
    while True:
        response = client.send(request, stream=True, follow_redirects=False)
        if (
            not follow_redirects
            or response.status_code not in _REDIRECTS
            or "location" not in response.headers
        ):
            break
        if len(history) >= limit:
            response.close()
            raise TooManyRedirects(f"more than {limit} redirects (last from {request.url})")
        try:
            next_request = _redirect_request(request, response, frozenset(bound))
        finally:
            response.close()
        history.append(response)
        request = next_request
    response.history = history
    if not stream:
        try:
            response.read()
        finally:
            response.close()
    return response
