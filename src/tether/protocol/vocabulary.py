"""The protocol's vocabulary, each name written once: tether's extensions and the event sets that end things.

Everything tether adds to the Responses API is named ``tether:`` (the Open Responses rule for extensions) and is
ignored safely by clients that do not know it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# -- tether's extensions -------------------------------------------------------------------------------------------

RESUME_TOKEN: Final = "tether:resume_token"
"""On the response object of ``response.created``: the secret that lets its holder resume a ``store: false``
response. Also the query parameter of an HTTP resume."""

IDEMPOTENCY_KEY: Final = "tether:idempotency_key"
"""In a create body: a retried turn with the same key follows or replays the original, never a second generation."""

INHERIT_PARAMS: Final = "tether:inherit_params"
"""In a create body: parameters the request omits are taken from the parent response."""

RESUME_EVENT: Final = "tether:response.resume"
"""The WebSocket client event asking for a response's events after a sequence number."""

ERROR_CODE: Final = "tether:code"
"""In a failed response's ``error``: tether's own code (e.g. ``generation_interrupted``) where ``code`` must be one
of the API's closed set, which strict clients validate, and so says ``server_error``."""

ANTHROPIC_THINKING: Final = "tether:anthropic:thinking:"
"""Opens the ``encrypted_content`` of a reasoning item that holds an Anthropic ``thinking`` block; its signature
follows, as Anthropic sent it."""

ANTHROPIC_REDACTED: Final = "tether:anthropic:redacted:"
"""Opens the ``encrypted_content`` of a reasoning item that holds an Anthropic ``redacted_thinking`` block; its
``data`` follows."""

CREATE_EVENT: Final = "response.create"
"""The WebSocket client event that creates a response (the hosted API's own)."""

# -- the events that end things ------------------------------------------------------------------------------------

TerminalEventType = Literal["response.completed", "response.failed", "response.incomplete"]

RESPONSE_TERMINAL_EVENTS: Final[frozenset[str]] = frozenset(get_args(TerminalEventType))
"""The last event of a response: its status is settled and its ``response`` is whole."""

ANSWER_END_EVENTS: Final[frozenset[str]] = RESPONSE_TERMINAL_EVENTS | {"error"}
"""What ends the answer to one create on a stream: a terminal event, or an ``error`` (a create refused before its
response started gets an ``error`` and nothing more; a failure inside a running response is an ``error`` followed
by ``response.failed``, and readers that stop at the first of these see the failure first)."""
