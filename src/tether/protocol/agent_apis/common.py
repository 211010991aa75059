"""What the agent-API translators share: reading Responses output and usage, and small wire conversions.

Sans-I/O, like the rest of :mod:`tether.protocol`: plain functions over JSON values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from tether.protocol.errors import ProtocolError
from tether.types import JSONObject

_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_TOOL_ID_INVALID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class ResponsesUsage:
    """A Responses ``usage`` object's numbers (``input_tokens`` includes the cached and cache-written tokens)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def of(cls, usage: Any) -> ResponsesUsage:
        """Read a ``usage`` object (missing or malformed numbers count as zero)."""
        if not isinstance(usage, dict):
            return cls()
        details = usage.get("input_tokens_details")
        details = details if isinstance(details, dict) else {}
        output_details = usage.get("output_tokens_details")
        output_details = output_details if isinstance(output_details, dict) else {}
        return cls(
            input_tokens=count(usage.get("input_tokens")),
            output_tokens=count(usage.get("output_tokens")),
            cached_tokens=count(details.get("cached_tokens")),
            cache_write_tokens=count(details.get("cache_write_tokens")),
            reasoning_tokens=count(output_details.get("reasoning_tokens")),
        )

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens neither read from nor written to a prompt cache."""
        return max(0, self.input_tokens - self.cached_tokens - self.cache_write_tokens)


def count(value: Any) -> int:
    """A token count, or 0 for anything that is not a non-negative integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ProtocolError:
    """A 400 for a request the agent's API would refuse, with ``param`` naming the field at fault."""
    return ProtocolError(400, code, message, param=param)


def unsupported(message: str, param: str | None = None) -> ProtocolError:
    """A 400 for something valid in the agent's API that tether's engine cannot express."""
    return ProtocolError(400, "unsupported_value", message, param=param)


def arguments_object(arguments: Any) -> JSONObject:
    """A function call's ``arguments`` (JSON text) as an object; ``{}`` when cut short or not an object."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def json_text(value: Any) -> str:
    """A JSON value as compact text (how Responses carries a call's arguments)."""
    return orjson.dumps(value).decode()


def tool_use_id(call_id: str) -> str:
    """A Responses ``call_id`` as an Anthropic ``tool_use`` id (``[A-Za-z0-9_-]+``): unchanged when already valid."""
    return _TOOL_ID_INVALID.sub("_", call_id) or "call"


def data_url(media_type: str, data: str) -> str:
    """A base64 data URL."""
    return f"data:{media_type};base64,{data}"


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a base64 data URL, else ``None``."""
    match = _DATA_URL.fullmatch(url)
    return None if match is None else (match["media"], match["data"])


def public_id(prefix: str, response_id: Any) -> str:
    """An id for the agent's API derived from tether's response id (``resp_abc`` → ``msg_abc``), so the two map."""
    text = str(response_id or "")
    return f"{prefix}{text.removeprefix('resp_')}" if text else f"{prefix}tether"


def stream_error(event: JSONObject) -> tuple[str, str]:
    """``(code, message)`` of a Responses ``error`` event in either shape (WebSocket-nested or flat SSE)."""
    inner = event.get("error")
    source = inner if isinstance(inner, dict) else event
    code = source.get("code") or source.get("type") or "server_error"
    message = source.get("message") or "The model failed while answering."
    return str(code), str(message)


def failed_error(response: Any) -> tuple[str, str]:
    """``(code, message)`` of a failed response object's ``error``."""
    error = response.get("error") if isinstance(response, dict) else None
    if not isinstance(error, dict):
        return "server_error", "The model failed while answering."
    return str(error.get("code") or "server_error"), str(error.get("message") or "The model failed while answering.")


def incomplete_reason(response: Any) -> str | None:
    """Why a response is ``incomplete`` (``max_output_tokens``, ``content_filter``, ...), or ``None``."""
    if not isinstance(response, dict) or response.get("status") != "incomplete":
        return None
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    return str(reason) if reason else "max_output_tokens"


class StopScanner:
    """Cuts streamed text at the request's stop sequences (the engine does not stop there itself).

    The text ends at the sequence that is complete first, as a model that stops as soon as its text ends with a
    sequence would; the cut falls where that sequence starts.

    Text that could be the start of a stop sequence is held back until the next piece tells; :meth:`flush` gives
    it up at the end of the text. After a hit, :attr:`hit` is the sequence and nothing more comes out.

    Args:
        sequences: the stop sequences (empty ones are ignored).
    """

    def __init__(self, sequences: tuple[str, ...]) -> None:
        self.sequences = tuple(s for s in sequences if s)
        self.hit: str | None = None
        self._held = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held) that can go out now."""
        if self.hit is not None:
            return ""
        if not self.sequences:
            return text
        buffer = self._held + text
        # The model stops as soon as its text ends with a sequence: the first to be complete wins.
        found = [(buffer.find(s) + len(s), buffer.find(s), s) for s in self.sequences if s in buffer]
        if found:
            _, index, self.hit = min(found)
            self._held = ""
            return buffer[:index]
        keep = max((k for s in self.sequences for k in range(1, len(s)) if buffer.endswith(s[:k])), default=0)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, now that the text has ended without a stop sequence."""
        held, self._held = self._held, ""
        return held if self.hit is None else ""


def cut_at_stop(text: str, sequences: tuple[str, ...]) -> tuple[str, str | None]:
    """``text`` up to its first stop sequence, and that sequence (``None`` when there is none)."""
    scanner = StopScanner(sequences)
    kept = scanner.feed(text)
    return kept + scanner.flush(), scanner.hit
