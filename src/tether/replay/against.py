"""Re-running a chain's inputs, turn by turn, on another route, and where its outputs diverge from the original's.

The chain is replayed on an in-process engine (memory store, the configured providers). Tool-call ids are the model's
own, so each original ``call_id`` in a later input is mapped to the id the re-run produced at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.engine.engine import Engine
from tether.protocol.errors import ProtocolError
from tether.protocol.events import is_terminal
from tether.protocol.input_items import as_function_call, as_function_call_output
from tether.protocol.request import Transport, parse_create
from tether.providers.base import ProviderResolver
from tether.replay.chain import ChainTurn
from tether.replay.transcript import describe
from tether.store.memory import MemoryStore
from tether.types import Item, JSONObject

IGNORED_KEYS = frozenset({"id", "call_id", "status"})


@dataclass(frozen=True, slots=True)
class Comparison:
    """One turn: the original output and the re-run's, and whether they match (ids aside)."""

    turn: int
    original: list[Item]
    rerun: list[Item]
    error: str | None = None

    @property
    def same(self) -> bool:
        return self.error is None and normalised(self.original) == normalised(self.rerun)

    def to_json(self) -> JSONObject:
        return {
            "turn": self.turn,
            "same": self.same,
            "original": self.original,
            "rerun": self.rerun,
            "error": self.error,
        }


def normalised(items: list[Item]) -> list[Any]:
    """Items without the keys that name rather than say (ids, call ids, status)."""
    return [_strip(item) for item in items]


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip(inner) for key, inner in value.items() if key not in IGNORED_KEYS}
    if isinstance(value, list):
        return [_strip(inner) for inner in value]
    return value


async def rerun(turns: list[ChainTurn], model: str, router: ProviderResolver) -> list[Comparison]:
    """Run each turn's input on ``model`` in order, continuing the re-run's own chain; stop at the first failure."""
    engine = Engine(MemoryStore(), router)
    comparisons: list[Comparison] = []
    previous: str | None = None
    call_ids: dict[str, str] = {}
    try:
        for index, turn in enumerate(turns, start=1):
            record = turn.record
            body: JSONObject = {
                **{key: value for key, value in record.params.items() if key != "previous_response_id"},
                "model": model,
                "input": [_remap(item, call_ids) for item in record.input_items],
                "store": True,
                "previous_response_id": previous,
            }
            try:
                live = await engine.create(parse_create(body, Transport.HTTP), tenant="replay")
                response = await _final(engine, live)
            except ProtocolError as error:
                comparisons.append(Comparison(index, record.output_items, [], f"{error.code}: {error.message}"))
                break
            output: list[Item] = response.get("output") or []
            failure = response.get("error")
            comparisons.append(
                Comparison(
                    index, record.output_items, output, f"{failure['code']}: {failure['message']}" if failure else None
                )
            )
            if failure:
                break
            call_ids.update(_matched_calls(record.output_items, output))
            previous = response["id"]
    finally:
        await engine.aclose()
    return comparisons


async def _final(engine: Engine, live: Any) -> JSONObject:
    final: JSONObject = {}
    async for event in engine.follow(live):
        if is_terminal(event):
            final = dict(event["response"])
    return final


def _matched_calls(original: list[Item], rerun: list[Item]) -> dict[str, str]:
    before = [call["call_id"] for item in original if (call := as_function_call(item)) is not None]
    after = [call["call_id"] for item in rerun if (call := as_function_call(item)) is not None]
    return dict(zip(before, after, strict=False))


def _remap(item: Item, call_ids: dict[str, str]) -> Item:
    output = as_function_call_output(item)
    if output is not None and output["call_id"] in call_ids:
        return {**item, "call_id": call_ids[output["call_id"]]}
    return item


def divergence_text(comparisons: list[Comparison], model: str) -> str:
    lines = [f"re-run on {model}:"]
    for comparison in comparisons:
        verdict = "same" if comparison.same else "DIVERGES"
        lines.append(f"turn {comparison.turn}: {verdict}")
        if not comparison.same:
            lines.extend(f"  original < {describe(item)}" for item in comparison.original)
            lines.extend(f"  re-run   < {describe(item)}" for item in comparison.rerun)
            if comparison.error:
                lines.append(f"  re-run   ! {comparison.error}")
    first = next((c.turn for c in comparisons if not c.same), None)
    lines.append("no divergence" if first is None else f"first divergence at turn {first}")
    return "\n".join(lines)
