"""A chain as a readable transcript, as JSON, and as its equivalent stateless request (sans I/O)."""

from __future__ import annotations

from typing import Any

import orjson

from tether.protocol.stateless import stateless_request
from tether.replay.chain import ChainTurn
from tether.types import Item, JSONObject

SNIPPET = 160


def as_request(turn: ChainTurn) -> JSONObject:
    """The stateless request equivalent to ``turn``: its parameters and the whole input the model saw."""
    return stateless_request(turn.record.params, turn.sampled)


def delta_request(turn: ChainTurn) -> JSONObject:
    """The request as a client continuing the chain sends it: the parameters, the parent id, only the new items."""
    record = turn.record
    request: JSONObject = {**record.params, "input": record.input_items}
    if record.parent_id is not None:
        request["previous_response_id"] = record.parent_id
    return request


def turn_json(index: int, turn: ChainTurn) -> JSONObject:
    record = turn.record
    sent = len(orjson.dumps(delta_request(turn)))
    stateless = len(orjson.dumps(as_request(turn)))
    usage = record.usage or {}
    return {
        "turn": index,
        "response_id": record.id,
        "previous_response_id": record.parent_id,
        "model": record.model,
        "status": record.status,
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "seconds": None if record.completed_at is None else record.completed_at - record.created_at,
        "input": record.input_items,
        "output": record.output_items,
        "usage": record.usage,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "bytes_sent": sent,
        "bytes_stateless": stateless,
        "bytes_saved": stateless - sent,
        "events": len(record.events),
        "error": record.error,
    }


def transcript_json(turns: list[ChainTurn]) -> JSONObject:
    rows = [turn_json(index, turn) for index, turn in enumerate(turns, start=1)]
    return {
        "response_id": turns[-1].record.id if turns else None,
        "turns": rows,
        "bytes_sent": sum(row["bytes_sent"] for row in rows),
        "bytes_stateless": sum(row["bytes_stateless"] for row in rows),
        "bytes_saved": sum(row["bytes_saved"] for row in rows),
    }


def transcript_text(turns: list[ChainTurn]) -> str:
    summary = transcript_json(turns)
    lines: list[str] = []
    for row in summary["turns"]:
        took = "" if row["seconds"] is None else f", {row['seconds']} s"
        lines.append(f"turn {row['turn']}  {row['response_id']}  {row['model']}  {row['status']}{took}")
        lines.append(
            f"  tokens in {row['input_tokens']} out {row['output_tokens']}  bytes sent {row['bytes_sent']}, "
            f"stateless {row['bytes_stateless']}, saved {row['bytes_saved']}  events {row['events']}"
        )
        lines.extend(f"  > {describe(item)}" for item in row["input"])
        lines.extend(f"  < {describe(item)}" for item in row["output"])
        if row["error"]:
            lines.append(f"  ! {row['error'].get('code')}: {row['error'].get('message')}")
    lines.append(
        f"{len(summary['turns'])} turns: bytes sent {summary['bytes_sent']}, stateless {summary['bytes_stateless']}, "
        f"saved {summary['bytes_saved']}"
    )
    return "\n".join(lines)


def describe(item: Item) -> str:
    """One line for an item: who said what, which tool was called with what, what a tool answered."""
    kind = item.get("type", "message")
    if kind == "message":
        return f"{item.get('role')}: {_snippet(_text(item.get('content')))}"
    if kind == "function_call":
        return f"call {item.get('name')}({_snippet(str(item.get('arguments', '')))}) [{item.get('call_id')}]"
    if kind == "function_call_output":
        output = item.get("output")
        return f"output [{item.get('call_id')}]: {_snippet(output if isinstance(output, str) else _text(output))}"
    if kind == "reasoning":
        summary = item.get("summary") or []
        return f"reasoning: {_snippet(_text(summary))}"
    return f"{kind}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[: SNIPPET - 1] + "…"
