"""The packet tier: real TCP stacks in two namespaces, joined by the packet emulator over TUN devices.

These need root and /dev/net/tun (CI runs as root on the same kind of machine); elsewhere they skip with the
reason. Timing assertions are lower bounds only: a loaded machine can make a link slower, never faster.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tether.netem import netns
from tether.netem.packet import PacketLink, PacketLinkError, PacketSupport, probe_packet_tier
from tether.netem.profiles import NetworkProfile, mbit

PORT = 5001
SERVER = """
import socket, sys
mode, size = sys.argv[1], int(sys.argv[2])
with socket.create_server(("10.78.0.2", 5001)) as listener:
    print("ready", flush=True)
    connection, _ = listener.accept()
    with connection:
        if mode == "send":
            connection.sendall(bytes(size))
            connection.shutdown(socket.SHUT_WR)
            connection.recv(1)
        else:
            while data := connection.recv(65536):
                connection.sendall(data)
"""


@pytest.fixture(scope="module")
def support() -> PacketSupport:
    probed = probe_packet_tier()
    if not probed.available:
        pytest.skip(f"packet tier unavailable here: {probed.reason}")
    return probed


@pytest.fixture
def link(support: PacketSupport) -> Iterator[PacketLink]:
    with PacketLink(NetworkProfile("loopback"), seed=3) as opened:
        yield opened


def serve(link: PacketLink, mode: str, size: int = 0) -> subprocess.Popen[bytes]:
    server = link.popen("server", [sys.executable, "-c", SERVER, mode, str(size)], stdout=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline() == b"ready\n"
    return server


def connect() -> socket.socket:
    return socket.create_connection((PacketLink.server_address, PORT), timeout=60)


def download() -> tuple[int, float]:
    started = time.monotonic()
    received = 0
    with connect() as client:
        while data := client.recv(65536):
            received += len(data)
    return received, time.monotonic() - started


def test_the_tier_reports_why_it_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    probed = probe_packet_tier()
    assert not probed.available
    assert "not root" in probed.reason


def test_round_trips_take_the_configured_rtt(link: PacketLink) -> None:
    link.configure(NetworkProfile("far", rtt_s=0.3), seed=1)
    serve(link, "echo")

    def ping_pong() -> tuple[float, list[float]]:
        started = time.monotonic()
        with connect() as client:
            handshake = time.monotonic() - started
            rounds = []
            for _ in range(5):
                sent = time.monotonic()
                client.sendall(b"x")
                assert client.recv(1) == b"x"
                rounds.append(time.monotonic() - sent)
        return handshake, rounds

    handshake, rounds = link.call("client", ping_pong, timeout=60)
    assert handshake >= 0.3 * 0.95, "the SYN and SYN-ACK each take half the RTT"
    assert min(rounds) >= 0.3 * 0.95
    assert statistics.median(rounds) >= 0.3


def test_the_rate_paces_a_download(link: PacketLink) -> None:
    size = 250_000
    link.configure(NetworkProfile("slow", down_bps=mbit(1)), seed=1)
    serve(link, "send", size)
    received, elapsed = link.call("client", download, timeout=60)
    stats = link.stats()
    assert received == size
    assert elapsed >= size * 8 / mbit(1) * 0.95, "250 kB at 1 Mbit/s take 2 s"
    assert stats["down"]["tcp_payload_bytes"] >= size
    assert stats["down"]["bytes"] > size, "IP bytes include the headers"
    assert stats["connections"] == 1


def test_loss_drops_packets_and_tcp_retransmits_them(link: PacketLink) -> None:
    size = 400_000
    link.configure(NetworkProfile("lossy", rtt_s=0.02, loss=0.05), seed=7)
    serve(link, "send", size)
    received, _ = link.call("client", download, timeout=120)
    down = link.stats()["down"]
    assert received == size, "TCP recovered every lost packet"
    lost = down["dropped"]["loss"] / down["packets"]
    assert 0.02 < lost < 0.09, f"about 5% of packets lost, got {lost:.1%}"
    assert down["tcp_payload_bytes"] > size, "the sender retransmitted what was lost"


def test_an_outage_drops_everything_and_tcp_rides_it_out(link: PacketLink) -> None:
    size = 100_000
    profile = NetworkProfile("dark", rtt_s=0.05, down_bps=mbit(0.4), outage_every_s=1.5, outage_s=0.5)
    link.configure(profile, seed=1)
    serve(link, "send", size)
    received, elapsed = link.call("client", download, timeout=120)
    down = link.stats()["down"]
    assert received == size
    assert down["dropped"]["outage"] > 0
    assert elapsed >= size * 8 / mbit(0.4)


def test_a_reset_outage_resets_live_connections(link: PacketLink) -> None:
    profile = NetworkProfile("nat", rtt_s=0.02, outage_every_s=2.0, outage_s=0.5, outage_mode="reset")
    serve(link, "echo")

    def hold_open() -> type[BaseException] | None:
        with connect() as client:
            link.configure(profile, seed=1)  # the first outage starts 1.5 s from now
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    client.sendall(b"x")
                    if client.recv(1) != b"x":
                        return None
                    time.sleep(0.1)
            except OSError as exc:
                return type(exc)
        return None

    assert link.call("client", hold_open, timeout=60) is ConnectionResetError
    assert link.stats()["resets_injected"] >= 2


def test_teardown_leaves_no_namespace_device_or_process(support: PacketSupport) -> None:
    devices_before = netns.ip(["-o", "link", "show"]).count("tether0")
    with PacketLink(NetworkProfile("loopback")) as link:
        names = set(link.namespaces.values())
        assert names <= netns.namespaces()
        router = link._router
        assert router is not None
        for namespace in names:
            assert "tether0" in netns.ip(["-n", namespace, "-o", "link", "show"])
        sleeper = link.popen("server", [sys.executable, "-c", "import time; time.sleep(600)"])
    assert not names & netns.namespaces()
    assert router.poll() is not None, "the emulator exited"
    assert sleeper.poll() is not None, "processes started in the namespaces are stopped"
    assert netns.ip(["-o", "link", "show"]).count("tether0") == devices_before == 0


def test_concurrent_links_do_not_collide(support: PacketSupport) -> None:
    with PacketLink(NetworkProfile("a")) as first, PacketLink(NetworkProfile("b")) as second:
        assert not set(first.namespaces.values()) & set(second.namespaces.values())
    assert not (set(first.namespaces.values()) | set(second.namespaces.values())) & netns.namespaces()


def test_a_failed_build_tears_everything_down(support: PacketSupport, monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.netem import packet

    def failing_ip(argv: list[str], **kwargs: float) -> str:
        if "addr" in argv:
            raise netns.NamespaceError("injected")
        return netns.ip(argv, **kwargs)

    monkeypatch.setattr(packet, "ip", failing_ip)
    link = PacketLink(NetworkProfile("doomed"))
    with pytest.raises(PacketLinkError, match="injected"):
        link.__enter__()
    assert not set(link.namespaces.values()) & netns.namespaces()
