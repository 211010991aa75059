"""``python -m tether.netem.router``: the packet emulator, a process that routes IP packets between two namespaces.

It opens a TUN device in each namespace (``--client-ns``, ``--server-ns``); the kernel of each namespace routes
its peer's address into that device, so every packet one side sends is read here, judged by a ``LinkDirection``
(rate, delay, jitter, loss, bursts, outages) and written into the other side's device when it is due, or never.
Both ends' TCP stacks see the RTT and the loss together, and retransmit and back off by themselves.

It is driven by JSON lines on stdin, one reply line on stdout each (``{"op": "configure", "profile": {...},
"seed": 1}``, ``{"op": "stats"}``), prints ``{"ready": true}`` once both devices exist, and exits at EOF on stdin,
so it never outlives the process that started it. Its devices vanish with it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import heapq
import json
import os
import random
import select
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

from tether.netem.flows import FlowTable
from tether.netem.ipv4 import parse_tcp
from tether.netem.link import LinkDirection
from tether.netem.netns import NamespaceError, entered
from tether.netem.profiles import NetworkProfile
from tether.netem.shaping import OutageClock
from tether.netem.types import Direction

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
READ_BATCH = 64


def open_tun(namespace: str, name: str) -> int:
    """Create TUN device ``name`` inside ``namespace`` and return its (non-blocking) file descriptor."""
    with entered(namespace):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
    return fd


class Router:
    """Moves packets between the client's and the server's TUN devices through the link model.

    Args:
        client_fd: The client namespace's TUN device.
        server_fd: The server namespace's TUN device.
    """

    def __init__(self, client_fd: int, server_fd: int) -> None:
        self._source = {Direction.UP: client_fd, Direction.DOWN: server_fd}
        self._sink = {Direction.UP: server_fd, Direction.DOWN: client_fd}
        self._pending: list[tuple[float, int, Direction, bytes]] = []
        self._sequence = 0
        self.configure(NetworkProfile("loopback"), 0, time.monotonic())

    def configure(self, profile: NetworkProfile, seed: int, now: float) -> None:
        """Emulate ``profile`` from ``now`` on: clocks restart, counters are zeroed, packets in flight are lost."""
        self.profile = profile
        self._links = {
            direction: LinkDirection.for_profile(profile, rate, random.Random(f"{seed}:{direction}"), now)
            for direction, rate in ((Direction.UP, profile.up_bps), (Direction.DOWN, profile.down_bps))
        }
        self._pending.clear()
        self._payload = dict.fromkeys(Direction, 0)
        self._flows = FlowTable()
        self._resets = 0
        self._reset_clock: OutageClock | None = None
        self._next_reset = float("inf")
        if profile.outage_every_s is not None and profile.outage_mode == "reset":
            self._reset_clock = OutageClock(profile.outage_every_s, profile.outage_s, now)
            self._next_reset = self._reset_clock.next_outage(now)

    def stats(self) -> dict[str, Any]:
        """What crossed the link since the last ``configure``, JSON-ready."""
        return {
            "profile": self.profile.name,
            "connections": self._flows.connections_opened,
            "resets_injected": self._resets,
            **{
                str(direction): {**link.counters.as_dict(), "tcp_payload_bytes": self._payload[direction]}
                for direction, link in self._links.items()
            },
        }

    def fds(self) -> list[int]:
        """The devices to wait on."""
        return list(self._source.values())

    def readable(self, fd: int, now: float) -> None:
        """Read what ``fd`` holds (up to a batch) and schedule each packet."""
        direction = Direction.UP if fd == self._source[Direction.UP] else Direction.DOWN
        for _ in range(READ_BATCH):
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            segment = parse_tcp(packet)
            if segment is not None:
                self._flows.observe(direction, segment)
                self._payload[direction] += segment.payload
            verdict = self._links[direction].admit(len(packet), now)
            if isinstance(verdict, float):
                self._sequence += 1
                heapq.heappush(self._pending, (verdict, self._sequence, direction, packet))

    def due(self, now: float) -> None:
        """Deliver every packet due by ``now``, and reset live connections if a reset outage has begun."""
        while self._pending and self._pending[0][0] <= now:
            _, _, direction, packet = heapq.heappop(self._pending)
            self._write(direction, packet)
        if self._reset_clock is not None and now >= self._next_reset:
            for direction, packet in self._flows.resets():
                self._resets += 1
                self._write(direction, packet)
            self._next_reset = self._reset_clock.next_outage(now)

    def timeout(self, now: float) -> float | None:
        """Seconds until something is due, or ``None`` if nothing is."""
        next_event = min(self._pending[0][0] if self._pending else float("inf"), self._next_reset)
        return None if next_event == float("inf") else max(0.0, next_event - now)

    def _write(self, direction: Direction, packet: bytes) -> None:
        # A device going down with its namespace loses the packet, as a dead link would.
        with contextlib.suppress(OSError):
            os.write(self._sink[direction], packet)


def handle(router: Router, line: str) -> dict[str, Any]:
    """The reply to one control line."""
    try:
        command = json.loads(line)
        if command["op"] == "configure":
            router.configure(NetworkProfile(**command["profile"]), int(command.get("seed", 0)), time.monotonic())
            return {"ok": True}
        if command["op"] == "stats":
            return {"ok": True, "stats": router.stats()}
        return {"ok": False, "error": f"unknown op {command['op']!r}"}
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def serve(router: Router, control: int) -> None:
    """Route packets and answer control lines until ``control`` reaches EOF."""
    buffered = b""
    while True:
        now = time.monotonic()
        ready, _, _ = select.select([control, *router.fds()], [], [], router.timeout(now))
        now = time.monotonic()
        for fd in ready:
            if fd != control:
                router.readable(fd, now)
                continue
            chunk = os.read(control, 65536)
            if not chunk:
                return
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                if line.strip():
                    print(json.dumps(handle(router, line.decode())), flush=True)
        router.due(time.monotonic())


def main(argv: Sequence[str] | None = None) -> int:
    """Open both devices, say so, and route until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m tether.netem.router", description=__doc__)
    parser.add_argument("--client-ns", required=True)
    parser.add_argument("--server-ns", required=True)
    parser.add_argument("--device", default="tether0", help="name of the TUN device in each namespace")
    args = parser.parse_args(argv)
    try:
        client_fd = open_tun(args.client_ns, args.device)
        server_fd = open_tun(args.server_ns, args.device)
    except (OSError, NamespaceError) as exc:
        print(json.dumps({"ready": False, "error": f"cannot open a TUN device: {exc}"}), flush=True)
        return 1
    print(json.dumps({"ready": True}), flush=True)
    serve(Router(client_fd, server_fd), sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
