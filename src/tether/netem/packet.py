"""The packet tier: client and server in network namespaces of their own, joined by the packet emulator.

``PacketLink`` creates two namespaces with unique names, starts ``python -m tether.netem.router`` (which opens a
TUN device in each), gives the devices their point-to-point addresses, and tears all of it down on exit, even
after a failure: the router exits when its stdin closes, its TUN devices vanish with it, and the namespaces are
deleted. Nothing is configured in the caller's namespace, so no emulated traffic can leave the pair.

Run the server with ``popen("server", argv)`` listening on ``server_address``, and client code with
``call("client", function)`` (a thread inside the client namespace) or ``popen("client", argv)``.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import IO, Any, Literal, Self, TypeAlias, TypeVar

from tether.netem.netns import NamespaceError, call_in_namespace, create_namespace, delete_namespace, ip
from tether.netem.profiles import NetworkProfile
from tether.netem.record import EmulationRecord

Side: TypeAlias = Literal["client", "server"]
T = TypeVar("T")

CLIENT_ADDRESS = "10.78.0.1"
SERVER_ADDRESS = "10.78.0.2"
DEVICE = "tether0"
STARTUP_TIMEOUT_S = 20.0


class PacketLinkError(RuntimeError):
    """The packet tier could not be set up, or its emulator stopped answering."""


@dataclass(frozen=True, slots=True)
class PacketSupport:
    """Whether the packet tier works on this machine, and why (not)."""

    available: bool
    reason: str


def probe_packet_tier() -> PacketSupport:
    """Build and tear down a throw-away ``PacketLink``, and report."""
    if os.geteuid() != 0:
        return PacketSupport(False, "not root: network namespaces and TUN devices need CAP_NET_ADMIN")
    if not os.path.exists("/dev/net/tun"):
        return PacketSupport(False, "no /dev/net/tun: the kernel has no TUN device here")
    if shutil.which("ip") is None:
        return PacketSupport(False, "missing ip (apt-get install iproute2)")
    try:
        with PacketLink(NetworkProfile("loopback")):
            pass
    except PacketLinkError as exc:
        return PacketSupport(False, str(exc))
    return PacketSupport(True, "TUN devices in two network namespaces, routed by the packet emulator")


class PacketLink:
    """Two namespaces joined by the packet emulator; see the module docstring.

    Args:
        profile: The link to emulate first (``configure`` changes it).
        seed: Seed of the emulator's random draws.
    """

    client_address = CLIENT_ADDRESS
    server_address = SERVER_ADDRESS

    def __init__(self, profile: NetworkProfile, *, seed: int = 0) -> None:
        self.profile = profile
        self.seed = seed
        token = secrets.token_hex(4)
        self.namespaces: dict[Side, str] = {"client": f"tether-pc-{token}", "server": f"tether-ps-{token}"}
        self._created: list[str] = []
        self._router: subprocess.Popen[str] | None = None
        self._processes: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def record(self) -> EmulationRecord:
        """What emulates the current profile."""
        return EmulationRecord.for_packet(self.profile, self.seed)

    def configure(self, profile: NetworkProfile, *, seed: int = 0) -> None:
        """Emulate ``profile`` from now on; the emulator's counters and clocks restart."""
        self._ask({"op": "configure", "profile": asdict(profile), "seed": seed})
        self.profile, self.seed = profile, seed

    def stats(self) -> dict[str, Any]:
        """What crossed the link since the last ``configure``: per direction (``up``, ``down``) packets and bytes
        offered and delivered, drops by reason, TCP payload bytes; connections opened; resets injected."""
        stats: dict[str, Any] = self._ask({"op": "stats"})["stats"]
        return stats

    def call(self, side: Side, function: Callable[[], T], *, timeout: float | None = None) -> T:
        """Run ``function`` on a thread inside ``side``'s namespace and return its result."""
        return call_in_namespace(self.namespaces[side], function, timeout=timeout)

    def popen(self, side: Side, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``side``'s namespace; it is terminated when the link closes."""
        process: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[side], *argv], **kwargs
        )
        self._processes.append(process)
        return process

    def close(self) -> None:
        """Stop the processes started here and the emulator, then delete both namespaces."""
        for process in self._processes:
            _stop(process, terminate=True)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        if self._router is not None:
            if self._router.stdin is not None:
                self._router.stdin.close()
            _stop(self._router, terminate=False)
            if self._router.stdout is not None:
                self._router.stdout.close()
            self._router = None
        while self._created:
            delete_namespace(self._created.pop())

    def _build(self) -> None:
        try:
            for name in self.namespaces.values():
                create_namespace(name)
                self._created.append(name)
        except NamespaceError as exc:
            raise PacketLinkError(f"cannot create a network namespace: {exc}") from exc
        command = [sys.executable, "-m", "tether.netem.router", "--device", DEVICE]
        command += ["--client-ns", self.namespaces["client"], "--server-ns", self.namespaces["server"]]
        self._router = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._reply()
        if not ready.get("ready"):
            raise PacketLinkError(str(ready.get("error", "the packet emulator did not start")))
        peers: dict[Side, tuple[str, str]] = {
            "client": (CLIENT_ADDRESS, SERVER_ADDRESS),
            "server": (SERVER_ADDRESS, CLIENT_ADDRESS),
        }
        try:
            for side, (local, peer) in peers.items():
                namespace = self.namespaces[side]
                ip(["-n", namespace, "addr", "add", local, "peer", peer, "dev", DEVICE])
                ip(["-n", namespace, "link", "set", DEVICE, "up"])
        except NamespaceError as exc:
            raise PacketLinkError(f"cannot configure the TUN devices: {exc}") from exc
        self.configure(self.profile, seed=self.seed)

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        router = self._router
        if router is None or router.stdin is None:
            raise PacketLinkError("the packet link is not open")
        try:
            router.stdin.write(json.dumps(command) + "\n")
            router.stdin.flush()
        except OSError as exc:
            raise PacketLinkError(f"the packet emulator is gone: {exc}") from exc
        reply = self._reply()
        if not reply.get("ok"):
            raise PacketLinkError(f"the packet emulator refused {command['op']}: {reply.get('error')}")
        return reply

    def _reply(self) -> dict[str, Any]:
        router = self._router
        assert router is not None
        assert router.stdout is not None
        line = _readline(router.stdout, STARTUP_TIMEOUT_S)
        if not line:
            raise PacketLinkError(f"the packet emulator exited (status {router.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply


def _readline(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise PacketLinkError(f"the packet emulator did not answer within {timeout:g} s")
    return stream.readline()


def _stop(process: subprocess.Popen[Any], *, terminate: bool) -> None:
    if process.poll() is not None:
        return
    if terminate:
        process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
