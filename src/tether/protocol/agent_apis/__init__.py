"""The APIs agents speak, translated to and from tether's Responses engine (sans-I/O).

For an Anthropic Messages or Chat Completions request whose routed upstream speaks another API (the built-in
scripted model included): the request becomes a Responses request body, and the Responses events the engine
yields become the agent's own answer and stream, frame for frame. See docs/edge.md ("Translation").

Anthropic Messages: :func:`translate_messages_request`, :class:`MessagesStreamEncoder`,
:func:`messages_response`, :func:`messages_failure`, :func:`count_message_tokens`, :func:`anthropic_error`,
:func:`encode_messages_event`, :func:`ping_frame`.

Chat Completions: :func:`translate_chat_request`, :class:`ChatStreamEncoder`, :func:`chat_completion`,
:func:`chat_failure`, :func:`chat_error`, :func:`encode_chat_chunk`, :data:`CHAT_DONE`.

For tests: :class:`MessagesStreamChecker` and :class:`ChatStreamChecker` read a stream as bytes and refuse
anything the documented format does not allow.
"""

from tether.protocol.agent_apis.anthropic_body import (
    anthropic_error,
    encode_messages_event,
    messages_failure,
    messages_response,
    ping_frame,
)
from tether.protocol.agent_apis.anthropic_reply import MessagesStreamEncoder
from tether.protocol.agent_apis.anthropic_request import (
    MessagesReply,
    MessagesTranslation,
    count_message_tokens,
    translate_messages_request,
)
from tether.protocol.agent_apis.chat_reply import (
    CHAT_DONE,
    ChatStreamEncoder,
    chat_completion,
    chat_error,
    chat_failure,
    encode_chat_chunk,
)
from tether.protocol.agent_apis.chat_request import ChatReply, ChatTranslation, translate_chat_request
from tether.protocol.agent_apis.wire_check import ChatStreamChecker, MessagesStreamChecker, WireError

__all__ = [
    "CHAT_DONE",
    "ChatReply",
    "ChatStreamChecker",
    "ChatStreamEncoder",
    "ChatTranslation",
    "MessagesReply",
    "MessagesStreamChecker",
    "MessagesStreamEncoder",
    "MessagesTranslation",
    "WireError",
    "anthropic_error",
    "chat_completion",
    "chat_error",
    "chat_failure",
    "count_message_tokens",
    "encode_chat_chunk",
    "encode_messages_event",
    "messages_failure",
    "messages_response",
    "ping_frame",
    "translate_chat_request",
    "translate_messages_request",
]
