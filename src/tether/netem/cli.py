"""``python -m tether.netem``: a shaping proxy as a process, e.g. inside a ``KernelLink`` namespace.

    python -m tether.netem --upstream 127.0.0.1:8000 --profile 3g --seed 1
    python -m tether.netem --upstream 10.77.0.2:8000 --profile-json '{"name": "sat", "rtt_s": 0.6}'

It prints ``listening HOST:PORT`` once it accepts connections, and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from tether.netem.catalog import ALIASES, PROFILES, profile_named
from tether.netem.profiles import NetworkProfile
from tether.netem.proxy import ShapingProxy


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tether.netem", description="Run a shaping TCP proxy.")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--profile", choices=sorted([*PROFILES, *ALIASES]), default="loopback")
    group.add_argument("--profile-json", help="a NetworkProfile's fields as a JSON object")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def profile_from(args: argparse.Namespace) -> NetworkProfile:
    """The profile the arguments ask for."""
    if args.profile_json is not None:
        return NetworkProfile(**json.loads(args.profile_json))
    return profile_named(args.profile)


async def serve(args: argparse.Namespace) -> None:
    upstream_host, _, upstream_port = args.upstream.rpartition(":")
    host, _, port = args.listen.rpartition(":")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    proxy = ShapingProxy(
        upstream_host, int(upstream_port), profile_from(args), seed=args.seed, host=host, port=int(port)
    )
    async with proxy:
        print(f"listening {proxy.host}:{proxy.port}", flush=True)
        await stop.wait()
    print(
        json.dumps(
            {"record": proxy.record.as_dict(), "bytes_up": proxy.stats.bytes_up, "bytes_down": proxy.stats.bytes_down}
        ),
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until a signal; the last line printed is a JSON summary."""
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
