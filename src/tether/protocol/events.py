"""The typed shapes of what tether writes on a stream: the response object, its usage and errors, and every event.

These are the Responses API shapes tether *builds* (in :mod:`tether.protocol.stream`) and *reads back* (the engine,
the transports, the stores). ``mypy --strict`` checks every key: a misspelt field or a missing ``sequence_number``
fails the type check. Items inside them stay :data:`~tether.types.Item` (JSON objects): tether forwards item
fields it does not read, and checks the ones it does when it parses a request.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypeAlias, TypedDict, TypeGuard

from tether.protocol.vocabulary import RESPONSE_TERMINAL_EVENTS
from tether.types import Item, JSONObject

ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class InputTokensDetails(TypedDict):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(TypedDict):
    reasoning_tokens: int


class UsageJSON(TypedDict):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


ResponseError = TypedDict("ResponseError", {"code": str, "message": str, "tether:code": NotRequired[str]})
"""``response.error`` of a failed response: ``code`` is one of the API's closed set; ``tether:code`` keeps tether's
own code when it is not (see :func:`tether.protocol.stream.response_error`)."""


class IncompleteDetails(TypedDict):
    reason: str


# The response object. Every key of the Open Responses schema is present; the request parameters tether echoes
# (instructions, tools, temperature, ...) and unknown ones the client sent are extra keys (see ``response_object``).
ResponseObject = TypedDict(
    "ResponseObject",
    {
        "id": str,
        "object": Literal["response"],
        "created_at": int,
        "completed_at": int | None,
        "status": ResponseStatus,
        "background": bool,
        "error": ResponseError | None,
        "incomplete_details": IncompleteDetails | None,
        "model": str,
        "output": list[Item],
        "previous_response_id": str | None,
        "store": bool,
        "usage": UsageJSON | None,
        "tether:resume_token": NotRequired[str],
    },
)


class ErrorBody(TypedDict):
    """The inner error object shared by every error shape."""

    message: str
    type: str
    param: str | None
    code: str
    headers: NotRequired[dict[str, str]]


class ErrorEvent(TypedDict):
    """An ``error`` event in the WebSocket shape (SSE flattens it, see ``sse_error_shape``).

    Inside a response's stream it has a ``sequence_number``; a refusal before any response started has none.
    """

    type: Literal["error"]
    status: int
    error: ErrorBody
    sequence_number: NotRequired[int]
    stream_id: NotRequired[str]


class SSEErrorEvent(TypedDict):
    """An ``error`` event as SSE carries it: the error's fields at the top level."""

    type: Literal["error"]
    code: str | None
    message: str | None
    param: str | None
    sequence_number: int | None


class OutputTextPart(TypedDict):
    type: Literal["output_text"]
    text: str
    annotations: list[JSONObject]
    logprobs: list[JSONObject]


class SummaryTextPart(TypedDict):
    type: Literal["summary_text"]
    text: str


class OutputMessage(TypedDict):
    id: str
    type: Literal["message"]
    status: ItemStatus
    role: Literal["assistant"]
    content: list[OutputTextPart]
    phase: NotRequired[Literal["commentary", "final_answer"]]


class FunctionCallItem(TypedDict):
    id: str
    type: Literal["function_call"]
    status: ItemStatus
    call_id: str
    name: str
    arguments: str


class ReasoningItem(TypedDict):
    id: str
    type: Literal["reasoning"]
    summary: list[SummaryTextPart]
    encrypted_content: NotRequired[str | None]  # as the upstream sent it (OpenAI: only when ``include`` asks)
    content: NotRequired[list[JSONObject]]  # raw reasoning text parts, from upstreams that show them
    status: NotRequired[ItemStatus]


OutputItem: TypeAlias = OutputMessage | FunctionCallItem | ReasoningItem
"""An item of a response's output, as tether builds it."""


class _Numbered(TypedDict):
    sequence_number: int
    stream_id: NotRequired[str]  # the lane's name, on every event of a named WebSocket lane


class ResponseCreated(_Numbered):
    type: Literal["response.created"]
    response: ResponseObject


class ResponseInProgress(_Numbered):
    type: Literal["response.in_progress"]
    response: ResponseObject


class ResponseCompleted(_Numbered):
    type: Literal["response.completed"]
    response: ResponseObject


class ResponseIncomplete(_Numbered):
    type: Literal["response.incomplete"]
    response: ResponseObject


class ResponseFailed(_Numbered):
    type: Literal["response.failed"]
    response: ResponseObject


class OutputItemAdded(_Numbered):
    type: Literal["response.output_item.added"]
    output_index: int
    item: OutputItem


class OutputItemDone(_Numbered):
    type: Literal["response.output_item.done"]
    output_index: int
    item: OutputItem


class _InItem(_Numbered):
    item_id: str
    output_index: int


class ContentPartAdded(_InItem):
    type: Literal["response.content_part.added"]
    content_index: int
    part: OutputTextPart


class ContentPartDone(_InItem):
    type: Literal["response.content_part.done"]
    content_index: int
    part: OutputTextPart


class OutputTextDelta(_InItem):
    type: Literal["response.output_text.delta"]
    content_index: int
    delta: str
    logprobs: list[JSONObject]


class OutputTextDone(_InItem):
    type: Literal["response.output_text.done"]
    content_index: int
    text: str
    logprobs: list[JSONObject]


class FunctionCallArgumentsDelta(_InItem):
    type: Literal["response.function_call_arguments.delta"]
    delta: str


class FunctionCallArgumentsDone(_InItem):
    type: Literal["response.function_call_arguments.done"]
    name: str
    arguments: str


class ReasoningSummaryPartAdded(_InItem):
    type: Literal["response.reasoning_summary_part.added"]
    summary_index: int
    part: SummaryTextPart


class ReasoningSummaryPartDone(_InItem):
    type: Literal["response.reasoning_summary_part.done"]
    summary_index: int
    part: SummaryTextPart


class ReasoningSummaryTextDelta(_InItem):
    type: Literal["response.reasoning_summary_text.delta"]
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(_InItem):
    type: Literal["response.reasoning_summary_text.done"]
    summary_index: int
    text: str


TerminalEvent: TypeAlias = ResponseCompleted | ResponseIncomplete | ResponseFailed

StreamEvent: TypeAlias = (
    ResponseCreated
    | ResponseInProgress
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | ReasoningSummaryPartAdded
    | ReasoningSummaryPartDone
    | ReasoningSummaryTextDelta
    | ReasoningSummaryTextDone
    | TerminalEvent
    | ErrorEvent
)
"""An event of a response's stream log, as the engine produces it and every transport encodes it."""

OutgoingEvent: TypeAlias = StreamEvent | ErrorEvent
"""What a transport sends: a stream event, or an error event refusing a request before any response started."""


def is_terminal(event: StreamEvent) -> TypeGuard[TerminalEvent]:
    """Whether ``event`` is a response's last event (its ``response`` is whole and its status settled)."""
    return event["type"] in RESPONSE_TERMINAL_EVENTS
