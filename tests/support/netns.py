"""Test hosts on one machine: a network namespace per host, joined to this one by a veth pair
(a point-to-point /30 link), so that a test can cut one host off and bring it back."""

from __future__ import annotations

import random
import shutil
import subprocess


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run(
        [*prefix, "ip", *args], check=check, capture_output=True, text=True, timeout=10
    )


def unavailable_reason() -> str | None:
    """Why hosts cannot be made here (no iproute2, no privilege), or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"wcprobe{random.randrange(10**6)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"network namespaces cannot be made here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Host:
    """Namespace ``name`` reaching this machine at ``gateway`` over its own link."""

    def __init__(self, name: str, subnet: int) -> None:
        self.name = name
        self.outer = f"{name}o"  # our end of the link (interface names: 15 characters at most)
        self.inner = f"{name}i"
        self.gateway = f"10.213.{subnet}.1"
        self.address = f"10.213.{subnet}.2"

    def create(self) -> Host:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.inner, "netns", self.name)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.outer)
        _ip("link", "set", self.outer, "up")
        _ip("addr", "add", f"{self.address}/30", "dev", self.inner, netns=self.name)
        _ip("link", "set", self.inner, "up", netns=self.name)
        _ip("link", "set", "lo", "up", netns=self.name)
        return self

    def cut(self) -> None:
        """Packets are dropped from now on: open connections hang rather than fail, as they do
        when a cable or a switch goes. The far end goes down, never ours: our route to the host
        then stays on the dead link (``linkdown``) instead of falling back to the default route
        and sending the host's traffic off this machine."""
        _ip("link", "set", self.inner, "down", netns=self.name)

    def restore(self) -> None:
        _ip("link", "set", self.inner, "up", netns=self.name)

    def delete(self) -> None:
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.outer, check=False)


GUARD = "10.213.0.0/16"


def guard() -> None:
    """Packets for this range never leave the machine, whatever happens to a link: a
    blackhole route under the links' own /30 routes catches what they no longer do."""
    _ip("route", "replace", "blackhole", GUARD)


def unguard() -> None:
    _ip("route", "del", "blackhole", GUARD, check=False)


def subnets(count: int) -> list[int]:
    """Distinct third octets for this run's links (10.213.N.0/30)."""
    return random.sample(range(10, 250), count)
