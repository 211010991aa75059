"""The edge link's compression study: what each turn's uplink frame costs raw, under permessage-deflate, and under
zstd with the chain's earlier content as the dictionary (both ends hold it), on the benchmark's tasks played as
Anthropic Messages sessions (tools and instructions on every request, as Claude Code sends them).

    python -m tether.bench.edge_compression [--seed 1] [--tasks 3]

For comparison it also prints the direct path (the whole request every turn, deflated as an HTTP body would be).
The frames are the edge's own (``ChainBook`` deltas, with the gateway warm after the first task).
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import zstandard

from tether.bench.workloads import Task, standard_tasks
from tether.edge.chains import ChainBook

PATH = "/v1/messages"


def anthropic_requests(task: Task) -> Iterator[dict[str, Any]]:
    """The requests an Anthropic Messages agent sends for a task: the whole history every turn."""
    tools = [{"name": t["name"], "description": t.get("description", ""), "input_schema": t.get("parameters", {})}
             for t in task.tools]  # fmt: skip
    messages: list[Any] = [{"role": "user", "content": task.prompt}]
    for index, step in enumerate(task.steps):
        yield {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True, "tools": tools,
               "system": [{"type": "text", "text": task.instructions}], "messages": list(messages)}  # fmt: skip
        if not step.calls:
            return
        uses = [{"type": "tool_use", "id": f"toolu_{index}_{n}", "name": call.name, "input": call.arguments}
                for n, call in enumerate(step.calls)]  # fmt: skip
        results = [{"type": "tool_result", "tool_use_id": use["id"], "content": call.output}
                   for use, call in zip(uses, step.calls, strict=True)]  # fmt: skip
        messages += [{"role": "assistant", "content": uses}, {"role": "user", "content": results}]


@dataclass
class Totals:
    raw: int = 0
    deflate: int = 0
    zstd_dict: int = 0
    direct_raw: int = 0
    direct_deflate: int = 0

    def add(self, other: Totals) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _deflated(stream: Any, data: bytes) -> int:
    """permessage-deflate with context takeover: one compressor per connection, each message sync-flushed."""
    return len(stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH)) - 4  # the 00 00 ff ff tail is not sent


def study(tasks: Sequence[Task], level: int = 3) -> list[tuple[str, Totals]]:
    book = ChainBook()
    rows = []
    link = zlib.compressobj(6, zlib.DEFLATED, -15)
    for task in tasks:
        totals = Totals()
        held = b""
        for request in anthropic_requests(task):
            delta = book.delta("anthropic-messages", PATH, request)
            frame = orjson.dumps({
                "type": "tether:edge.turn", "turn": "k" * 32, "api": "anthropic-messages", "path": PATH,
                "id": delta.digest, "base": delta.base, "patch": delta.patch,
            })  # fmt: skip
            totals.raw += len(frame)
            totals.deflate += _deflated(link, frame)
            dictionary = zstandard.ZstdCompressionDict(held[-(1 << 20) :]) if held else None
            compressor = zstandard.ZstdCompressor(level=level, dict_data=dictionary)
            totals.zstd_dict += len(compressor.compress(frame))
            whole = orjson.dumps(request)
            totals.direct_raw += len(whole)
            totals.direct_deflate += len(zlib.compress(whole, 6))
            book.accepted("anthropic-messages", PATH, request)
            held = whole  # both ends hold the chain's latest request: the dictionary of the next frame
        rows.append((task.name, totals))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.bench.edge_compression", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=3, help="how many of the standard tasks, played in order")
    args = parser.parse_args(argv)
    rows = study(standard_tasks(args.seed)[: args.tasks])
    print(f"{'task':<28}{'direct':>10}{'direct+defl':>12}{'edge raw':>10}{'edge defl':>11}{'edge zstd':>11}")
    grand = Totals()
    for name, totals in rows:
        grand.add(totals)
        print(f"{name:<28}{totals.direct_raw:>10}{totals.direct_deflate:>12}{totals.raw:>10}{totals.deflate:>11}"
              f"{totals.zstd_dict:>11}")  # fmt: skip
    print(f"{'all':<28}{grand.direct_raw:>10}{grand.direct_deflate:>12}{grand.raw:>10}{grand.deflate:>11}"
          f"{grand.zstd_dict:>11}")  # fmt: skip
    saved_deflate = 1 - grand.deflate / grand.raw
    saved_zstd = 1 - grand.zstd_dict / grand.raw
    print(
        f"deflate saves {saved_deflate:.1%} of the edge's frames, zstd with the chain as dictionary {saved_zstd:.1%};"
        f" zstd's frames are {1 - grand.zstd_dict / grand.deflate:.1%} smaller than deflate's (adopt at >= 20%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
