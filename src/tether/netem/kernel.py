"""The kernel tier: two network namespaces joined by a veth pair, shaped by ``tc`` and nftables.

Real TCP stacks meet a real bottleneck: ``tc tbf`` limits each direction's rate on the sending veth, nftables
drops packets at random on the receiving side (``numgen random``), so loss costs real retransmissions, and ``tc
netem`` adds delay where the kernel has it. What the kernel cannot do here (delay without netem, outages) is left to
a ``ShapingProxy`` running in the client namespace with ``KernelLink.residual_profile``.

The two addresses, 10.77.0.1 (client) and 10.77.0.2 (server), exist only inside the namespaces this module
creates; nothing is configured in the caller's namespace, so no traffic can leave the pair.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

from tether.netem.profiles import NetworkProfile
from tether.netem.record import EmulationRecord, Mechanism, wants

Side: TypeAlias = Literal["client", "server"]

CLIENT_ADDRESS = "10.77.0.1"
SERVER_ADDRESS = "10.77.0.2"
PREFIX_LENGTH = 30
NFT_TABLE = "tether_netem"
LOSS_SCALE = 1_000_000
TBF_LATENCY_MS = 300
"""Queueing a tbf allows before dropping: a moderately bloated mobile buffer."""


class KernelError(RuntimeError):
    """A command of the kernel tier failed."""


@dataclass(frozen=True, slots=True)
class KernelSupport:
    """What this machine's kernel tier can do.

    Attributes:
        available: Namespaces, veth pairs and ``tc tbf`` all work.
        reason: Why not, or what works.
        nft: Loss by nftables is possible.
        netem: ``tc netem`` exists, so delay can be in the kernel.
    """

    available: bool
    reason: str
    nft: bool = False
    netem: bool = False


@dataclass(frozen=True, slots=True)
class InterfaceCounters:
    """Kernel counters of one veth end: bytes on the wire (Ethernet frames), packets, drops."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    tx_dropped: int


def probe_kernel() -> KernelSupport:
    """Try everything the kernel tier needs in a throw-away namespace, and report."""
    if os.geteuid() != 0:
        return KernelSupport(False, "not root: network namespaces and tc need CAP_NET_ADMIN")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return KernelSupport(False, f"missing {' and '.join(missing)} (apt-get install iproute2)")
    namespace = f"tether-p-{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", namespace])
    except KernelError as exc:
        return KernelSupport(False, f"cannot create a network namespace: {exc}")
    try:
        _run(["ip", "-n", namespace, "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b"])
        _run(["tc", "-n", namespace, "qdisc", "add", "dev", "probe-a", "root", *_tbf_args(1e6)])
        netem = _succeeds(["tc", "-n", namespace, "qdisc", "add", "dev", "probe-b", "root", "netem", "delay", "1ms"])
        nft = shutil.which("nft") is not None and _succeeds(
            ["ip", "netns", "exec", namespace, "nft", "add", "table", "inet", NFT_TABLE]
        )
    except KernelError as exc:
        return KernelSupport(False, f"veth or tc tbf unusable: {exc}")
    finally:
        _succeeds(["ip", "netns", "delete", namespace])
    notes = ["netns, veth and tc tbf work"]
    notes.append("tc netem present" if netem else "no tc netem in this kernel: delay stays in the proxy")
    notes.append("nftables present" if nft else "no nft: loss stays in the proxy (apt-get install nftables)")
    return KernelSupport(True, "; ".join(notes), nft=nft, netem=netem)


def kernel_tier_available() -> tuple[bool, str]:
    """Whether the kernel tier works on this machine, and why (not)."""
    support = probe_kernel()
    return support.available, support.reason


def run_in_netns(
    namespace: str, argv: Sequence[str], *, timeout: float | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` inside ``namespace`` (``ip netns exec``), capturing its output."""
    return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, timeout=timeout, check=check)


class KernelLink:
    """Client and server namespaces joined by a shaped veth pair; torn down on exit, even after a failure.

    Up (client → server) is rate-limited on the client's veth and loses packets on the server's input; down is the
    mirror image. Run the server with ``popen("server", argv)`` listening on ``server_address`` and the client with
    ``popen("client", argv)``; processes started this way are terminated on exit.

    Args:
        profile: The link to emulate.
        support: The result of ``probe_kernel()``, if already known.

    Raises:
        KernelError: On entry, if the kernel tier is unavailable or a command fails.
    """

    client_address = CLIENT_ADDRESS
    server_address = SERVER_ADDRESS

    def __init__(self, profile: NetworkProfile, *, support: KernelSupport | None = None) -> None:
        self.profile = profile
        self._support = support
        token = secrets.token_hex(3)
        self.namespaces: dict[Side, str] = {"client": f"tether-c-{token}", "server": f"tether-s-{token}"}
        self.devices: dict[Side, str] = {"client": f"tc-{token}", "server": f"ts-{token}"}
        self.netem = False
        self.nft = False
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        support = self._support or probe_kernel()
        if not support.available:
            raise KernelError(f"kernel tier unavailable: {support.reason}")
        self.netem = support.netem and (self.profile.rtt_s > 0 or self.profile.jitter_s > 0)
        self.nft = support.nft and self.profile.loss > 0
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
        """Which mechanism emulates each aspect (``"proxy"``: the residual proxy must run for it)."""
        kernel: dict[str, Mechanism] = {"delay": "tc-netem" if self.netem else "proxy", "rate": "tc-tbf"}
        kernel["loss"] = "nft" if self.nft else "proxy"
        kernel["outages"] = "proxy"
        kernel["bursts"] = "none"
        mechanisms: dict[str, Mechanism] = {
            aspect: kernel[aspect] if wanted else "none" for aspect, wanted in wants(self.profile)
        }
        return EmulationRecord("kernel", self.profile, None, mechanisms)

    @property
    def residual_profile(self) -> NetworkProfile:
        """What a ``ShapingProxy`` in the client namespace must add to the kernel's shaping."""
        profile = dataclasses.replace(self.profile, up_bps=None, down_bps=None)
        if self.nft:
            profile = dataclasses.replace(profile, loss=0.0)
        if self.netem:
            profile = dataclasses.replace(profile, rtt_s=0.0, jitter_s=0.0)
        return profile

    def proxy_argv(self, upstream_port: int, *, listen_port: int = 0, seed: int = 0) -> list[str]:
        """Command that runs the residual ``ShapingProxy`` (see ``python -m tether.netem``) towards the server.

        Start it with ``popen("client", ...)``; it prints ``listening 127.0.0.1:PORT`` once clients can connect.
        """
        profile = json.dumps(dataclasses.asdict(self.residual_profile))
        upstream = f"{SERVER_ADDRESS}:{upstream_port}"
        listen = f"127.0.0.1:{listen_port}"
        command = ["-m", "tether.netem", "--upstream", upstream, "--listen", listen, "--profile-json", profile]
        return [sys.executable, *command, "--seed", str(seed)]

    def popen(self, side: Side, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``side``'s namespace; it is terminated when the link closes."""
        process: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[side], *argv], **kwargs
        )
        self._processes.append(process)
        return process

    def run(
        self, side: Side, argv: Sequence[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` to completion in ``side``'s namespace (see ``run_in_netns``)."""
        return run_in_netns(self.namespaces[side], argv, timeout=timeout)

    def counters(self, side: Side) -> InterfaceCounters:
        """Kernel counters of ``side``'s veth end."""
        output = _run(["ip", "-n", self.namespaces[side], "-s", "-j", "link", "show", "dev", self.devices[side]])
        stats = json.loads(output)[0]["stats64"]
        rx, tx = stats["rx"], stats["tx"]
        return InterfaceCounters(rx["bytes"], tx["bytes"], rx["packets"], tx["packets"], tx["dropped"])

    def loss_drops(self, side: Side) -> int:
        """Packets nftables dropped on arrival at ``side`` (0 without nftables loss)."""
        if not self.nft:
            return 0
        command = ["nft", "-j", "list", "chain", "inet", NFT_TABLE, "input"]
        output = json.loads(_run(["ip", "netns", "exec", self.namespaces[side], *command]))
        return sum(counter["packets"] for counter in _find(output, "counter"))

    def close(self) -> None:
        """Terminate the processes started here, then delete the namespaces (and with them the veth pair)."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        while self._created:
            _succeeds(["ip", "netns", "delete", self._created.pop()])

    def _build(self) -> None:
        client_ns, server_ns = self.namespaces["client"], self.namespaces["server"]
        client_dev, server_dev = self.devices["client"], self.devices["server"]
        for namespace in (client_ns, server_ns):
            _run(["ip", "netns", "add", namespace])
            self._created.append(namespace)
            _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        _run(
            [
                "ip",
                "-n",
                client_ns,
                "link",
                "add",
                client_dev,
                "type",
                "veth",
                "peer",
                "name",
                server_dev,
                "netns",
                server_ns,
            ]
        )
        addresses: dict[Side, str] = {"client": CLIENT_ADDRESS, "server": SERVER_ADDRESS}
        for side, address in addresses.items():
            namespace, device = self.namespaces[side], self.devices[side]
            _run(["ip", "-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", device])
            # One MSS per skb, as on a real link: otherwise TSO hands the veth 64 KB super-packets, and tbf bursts
            # and nftables drops would act on dozens of segments at once.
            _succeeds(["ip", "-n", namespace, "link", "set", "dev", device, "gso_max_segs", "1"])
            _run(["ip", "-n", namespace, "link", "set", device, "up"])
        self._shape(client_ns, client_dev, self.profile.up_bps)
        self._shape(server_ns, server_dev, self.profile.down_bps)
        if self.nft:
            self._drop_on_input(server_ns, server_dev)
            self._drop_on_input(client_ns, client_dev)

    def _shape(self, namespace: str, device: str, rate_bps: float | None) -> None:
        tc = ["tc", "-n", namespace, "qdisc", "add", "dev", device]
        parent = ["root"]
        if self.netem:
            delay = [f"{self.profile.one_way_delay_s * 1000:.3f}ms"]
            if self.profile.jitter_s > 0:
                delay.append(f"{self.profile.jitter_s * 1000:.3f}ms")
            _run([*tc, "root", "handle", "1:", "netem", "delay", *delay])
            parent = ["parent", "1:"]
        if rate_bps is not None:
            _run([*tc, *parent, "handle", "10:", *_tbf_args(rate_bps)])

    def _drop_on_input(self, namespace: str, device: str) -> None:
        threshold = round(self.profile.loss * LOSS_SCALE)
        script = (
            f"table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
            f'    iifname "{device}" numgen random mod {LOSS_SCALE} < {threshold} counter drop\n  }}\n}}\n'
        )
        _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], stdin=script)


def _tbf_args(rate_bps: float) -> list[str]:
    # The bucket must hold a few full frames (or tbf drops them), and about 10 ms of traffic at high rates.
    burst = max(4 * 1514, int(rate_bps / 8 / 100))
    return ["tbf", "rate", f"{int(rate_bps)}bit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]


def _run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(f"{' '.join(argv)}: {exc}") from exc
    if result.returncode != 0:
        raise KernelError(f"{' '.join(argv)}: {result.stderr.strip() or f'exit {result.returncode}'}")
    return result.stdout


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        _run(argv)
    except KernelError:
        return False
    return True


def _find(node: object, key: str) -> Iterator[Mapping[str, int]]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, dict):
                yield value
            else:
                yield from _find(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key)
