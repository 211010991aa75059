"""What the gateway writes to its store for edge chains, per turn, along one long Claude Code-sized tool loop.

``python -m tether.bench.edge_store --turns 60``: each turn's request (about 32 KB of tool schemas and 7 KB of system
prompt, then the whole history) is held as the gateway holds a rebuilt edge request, on a memory store that counts
the bytes of the blobs it is given. Deterministic: bytes, not time.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from tether.server.edge_content import EdgeContent
from tether.store.memory import MemoryStore

TOOLS: list[dict[str, Any]] = [
    {"name": f"tool{n}", "description": f"Tool {n}: run a command and return its output. " * 20,
     "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}
    for n in range(40)
]  # fmt: skip
SYSTEM = "You are a coding agent. " * 300


class CountingStore(MemoryStore):
    """A memory store that counts the edge-blob bytes written to it."""

    written = 0

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        self.written += sum(len(body) for body in blobs.values())
        await super().put_edge_blobs(tenant, blobs, expires_at)


def next_messages(messages: list[Any], turn: int) -> list[Any]:
    call = {"type": "tool_use", "id": f"toolu_{turn}", "name": "tool1", "input": {"x": "ls -la " * 20}}
    result = {"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": f"file_{turn}.py\n" * 40}
    return [*messages, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]


async def run(turns: int) -> list[tuple[int, int, int]]:
    """``(turn, request bytes, bytes written to the store)`` for each turn."""
    store = CountingStore()
    content = EdgeContent(1 << 30, store)
    messages: list[Any] = [{"role": "user", "content": "fix the failing test"}]
    rows = []
    for turn in range(1, turns + 1):
        request = {"model": "claude", "max_tokens": 4096, "system": SYSTEM, "tools": TOOLS, "messages": messages}
        before = store.written
        await content.hold("tenant", request)
        rows.append((turn, len(orjson.dumps(request)), store.written - before))
        messages = next_messages(messages, turn)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=60)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.turns))
    print("| turn | request bytes | written to the store | written / request |")
    print("|---|---|---|---|")
    shown = {1, 2, 10, 30, args.turns}
    for turn, size, written in rows:
        if turn in shown:
            print(f"| {turn} | {size:,} | {written:,} | {written / size:.1%} |")
    total_requests = sum(size for _, size, _ in rows)
    total_written = sum(written for _, _, written in rows)
    print(f"| all {args.turns} | {total_requests:,} | {total_written:,} | {total_written / total_requests:.1%} |")


if __name__ == "__main__":
    main()
