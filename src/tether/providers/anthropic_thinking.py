"""Anthropic extended thinking in Responses terms (sans-I/O): the request's ``thinking``, and thinking blocks kept as
reasoning items.

Requesting it: an Anthropic ``thinking`` object the client sends as a top-level field goes up as it is; otherwise
``reasoning.effort`` maps to ``thinking: {type: "enabled", budget_tokens: N}`` (:data:`EFFORT_BUDGETS`; ``none``
asks for none); otherwise the provider's ``thinking_budget_tokens`` applies, if configured. The budget counts
against ``max_tokens``, as reasoning counts against ``max_output_tokens``: without a ``max_output_tokens`` the
request gets the default answer room plus the budget; with one too small for the budget, the budget shrinks to fit
(Anthropic's floor is 1,024 tokens, so a smaller ``max_output_tokens`` is refused).

Keeping it: a ``thinking`` block becomes a ``reasoning`` item whose summary is the thinking text and whose
``encrypted_content`` is the block's signature behind the prefix ``tether:anthropic:thinking:``; a
``redacted_thinking`` block becomes one with no summary and its ``data`` behind ``tether:anthropic:redacted:``. The
prefix tells them from reasoning another upstream sealed (which Anthropic cannot read, so it is not sent there),
and it lives inside ``encrypted_content`` because clients send that field back verbatim (Codex keeps only the
standard fields of a reasoning item). Sent back, the item is the block again, byte for byte: thinking text and
signature as the upstream sent them, in the assistant message before the ``tool_use`` it preceded, as the API
requires of a tool loop with thinking enabled.
"""

from __future__ import annotations

from collections.abc import Mapping

from tether.protocol.errors import ProtocolError
from tether.protocol.input_items import InputReasoning
from tether.protocol.vocabulary import ANTHROPIC_REDACTED as REDACTED_PREFIX
from tether.protocol.vocabulary import ANTHROPIC_THINKING as THINKING_PREFIX
from tether.types import JSONObject

MIN_BUDGET_TOKENS = 1024
EFFORT_BUDGETS: Mapping[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
}


def thinking_config(params: JSONObject, configured_budget: int | None) -> JSONObject | None:
    """The ``thinking`` object a turn sends, or ``None`` for none.

    Raises:
        ProtocolError: ``reasoning.effort`` is not one tether can map (400, param ``reasoning.effort``).
    """
    explicit = params.get("thinking")
    if isinstance(explicit, dict):
        return dict(explicit)
    reasoning = params.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort == "none":
        return None
    if effort is not None:
        if effort not in EFFORT_BUDGETS:
            known = ", ".join(["none", *EFFORT_BUDGETS])
            message = f"reasoning.effort must be one of {known} for this upstream, got {effort!r}."
            raise ProtocolError(400, "invalid_value", message, param="reasoning.effort")
        return {"type": "enabled", "budget_tokens": EFFORT_BUDGETS[effort]}
    if configured_budget is not None:
        return {"type": "enabled", "budget_tokens": configured_budget}
    return None


def fit_budget(thinking: JSONObject, max_output_tokens: object, default_max_tokens: int) -> int:
    """The ``max_tokens`` for a request with ``thinking`` enabled, shrinking its budget to fit a client's limit.

    Raises:
        ProtocolError: the client's ``max_output_tokens`` leaves no room for the smallest budget.
    """
    budget = thinking.get("budget_tokens")
    if thinking.get("type") != "enabled" or not isinstance(budget, int):
        return max_output_tokens if isinstance(max_output_tokens, int) else default_max_tokens
    if not isinstance(max_output_tokens, int):
        return default_max_tokens + budget
    if max_output_tokens <= MIN_BUDGET_TOKENS:
        message = (
            f"max_output_tokens must be above {MIN_BUDGET_TOKENS} with extended thinking on this upstream "
            "(its thinking budget counts against it)."
        )
        raise ProtocolError(400, "invalid_value", message, param="max_output_tokens")
    thinking["budget_tokens"] = min(budget, max_output_tokens - 1)
    return max_output_tokens


def reasoning_fields(block: JSONObject) -> JSONObject:
    """What a finished ``thinking`` or ``redacted_thinking`` block adds to its reasoning item."""
    if block.get("type") == "redacted_thinking":
        return {"encrypted_content": REDACTED_PREFIX + str(block.get("data") or "")}
    return {"encrypted_content": THINKING_PREFIX + str(block.get("signature") or "")}


def is_anthropic_reasoning(sealed: object) -> bool:
    """Whether an ``encrypted_content`` holds an Anthropic thinking block (which only Anthropic can take back)."""
    return isinstance(sealed, str) and sealed.startswith((THINKING_PREFIX, REDACTED_PREFIX))


def thinking_block(item: InputReasoning) -> JSONObject | None:
    """The Anthropic block a reasoning item holds, or ``None`` when another upstream sealed it (or none did)."""
    sealed = item.get("encrypted_content")
    if not isinstance(sealed, str):
        return None
    if sealed.startswith(REDACTED_PREFIX):
        return {"type": "redacted_thinking", "data": sealed.removeprefix(REDACTED_PREFIX)}
    if sealed.startswith(THINKING_PREFIX):
        summary = item.get("summary") or []
        text = "".join(str(part.get("text") or "") for part in summary if isinstance(part, dict))
        return {"type": "thinking", "thinking": text, "signature": sealed.removeprefix(THINKING_PREFIX)}
    return None
