"""The kernel tier: detection everywhere; real namespaces, tbf and nftables where the machine allows them."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from tether.netem import KernelLink, KernelSupport, NetworkProfile, kernel_tier_available, mbit, probe_kernel
from tether.netem import kernel as kernel_module

SERVER = """
import socket, sys
with socket.create_server(("10.77.0.2", 5001)) as listener:
    print("ready", flush=True)
    connection, _ = listener.accept()
    with connection:
        connection.sendall(bytes(int(sys.argv[1])))
        connection.shutdown(socket.SHUT_WR)
        connection.recv(1)
"""

CLIENT = """
import socket, sys, time
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as client:
    started, received = time.monotonic(), 0
    while data := client.recv(65536):
        received += len(data)
    print(received, time.monotonic() - started)
"""


@pytest.fixture(scope="module")
def support() -> KernelSupport:
    probed = probe_kernel()
    if not probed.available:
        pytest.skip(f"kernel tier unavailable here: {probed.reason}")
    return probed


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout


def download(link: KernelLink, size: int, *, via_port: int | None = None) -> tuple[int, float]:
    """``size`` bytes from a server in the server namespace to a client in the client namespace.

    With ``via_port``, the client connects to that port of its own loopback (a proxy) instead of the server.
    """
    server = link.popen("server", [sys.executable, "-c", SERVER, str(size)], stdout=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline() == b"ready\n"
    target = [link.server_address, "5001"] if via_port is None else ["127.0.0.1", str(via_port)]
    result = link.run("client", [sys.executable, "-c", CLIENT, *target], timeout=30)
    server.communicate(timeout=10)
    received, elapsed = result.stdout.split()
    return int(received), float(elapsed)


def test_availability_is_a_verdict_with_a_reason() -> None:
    available, reason = kernel_tier_available()
    assert isinstance(available, bool)
    assert reason


def test_not_root_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert kernel_tier_available() == (False, "not root: network namespaces and tc need CAP_NET_ADMIN")


def test_missing_tools_mean_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    available, reason = kernel_tier_available()
    assert not available
    assert "missing ip and tc" in reason


def test_entering_an_unavailable_tier_fails_clearly() -> None:
    link = KernelLink(NetworkProfile("x"), support=KernelSupport(False, "no netns here"))
    with pytest.raises(kernel_module.KernelError, match="no netns here"):
        link.__enter__()


def test_the_record_and_the_residual_profile_split_the_work() -> None:
    profile = NetworkProfile("sat", rtt_s=0.6, up_bps=mbit(2), loss=0.01, outage_every_s=10.0, outage_s=1.0)
    link = KernelLink(profile)
    link.nft = True
    assert link.record.tier == "kernel"
    assert dict(link.record.mechanisms) == {
        "delay": "proxy", "rate": "tc-tbf", "loss": "nft", "outages": "proxy", "bursts": "none",
    }  # fmt: skip
    assert link.residual_profile == dataclasses.replace(profile, up_bps=None, loss=0.0)
    link.netem = True
    assert link.record.mechanisms["delay"] == "tc-netem"
    assert link.residual_profile.rtt_s == 0.0


def test_tbf_limits_the_rate(support: KernelSupport) -> None:
    size = 128 * 1024
    with KernelLink(NetworkProfile("kernel-slow", down_bps=mbit(1)), support=support) as link:
        assert set(link.namespaces.values()) <= set(namespaces().split())
        received, elapsed = download(link, size)
        counters = link.counters("server")
    assert received == size
    assert elapsed >= 0.7, "128 KiB at 1 Mbit/s takes about 1.1 s"
    assert counters.tx_bytes > size, "wire bytes include headers"
    assert not set(link.namespaces.values()) & set(namespaces().split()), "namespaces are deleted on exit"


def test_nftables_loss_costs_retransmissions_not_data(support: KernelSupport) -> None:
    if not support.nft:
        pytest.skip("nft is not installed")
    size = 512 * 1024
    with KernelLink(NetworkProfile("kernel-lossy", loss=0.05), support=support) as link:
        assert link.record.mechanisms["loss"] == "nft"
        received, _ = download(link, size)
        drops = link.loss_drops("client")
    assert received == size
    assert drops > 0


def test_a_failed_build_tears_everything_down(support: KernelSupport, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise kernel_module.KernelError("injected")

    monkeypatch.setattr(KernelLink, "_shape", fail)
    link = KernelLink(NetworkProfile("doomed", up_bps=mbit(1)), support=support)
    with pytest.raises(kernel_module.KernelError, match="injected"):
        link.__enter__()
    assert not set(link.namespaces.values()) & set(namespaces().split())


def test_the_residual_proxy_adds_what_the_kernel_cannot(support: KernelSupport) -> None:
    profile = NetworkProfile("kernel-far", rtt_s=0.3, down_bps=mbit(2))
    with KernelLink(profile, support=support) as link:
        proxy = link.popen("client", link.proxy_argv(5001), stdout=subprocess.PIPE)
        assert proxy.stdout is not None
        listening = proxy.stdout.readline().decode().split()
        assert listening[0] == "listening"
        received, elapsed = download(link, 1000, via_port=int(listening[1].rpartition(":")[2]))
        proxy.terminate()
        summary = json.loads(proxy.communicate(timeout=10)[0].splitlines()[-1])
    assert received == 1000
    assert summary["bytes_down"] == 1000
    if not support.netem:
        assert elapsed >= 0.3 * 0.9, "the server's first byte takes one RTT through the proxy"
        assert summary["record"]["profile"]["rtt_s"] == 0.3
        assert summary["record"]["profile"]["down_bps"] is None, "the rate is tbf's job"
