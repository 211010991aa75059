"""Resume: following a response again after a sequence number, the same on every transport.

- A live response is found in memory (``store=false`` ones only with their ``tether:resume_token``, and only within
  the resume grace); a finished stored one is replayed from the durable store. Anything else, including another
  tenant's response, is ``response_not_found``.
- A resume always ends in the response's terminal event or in an error, never in silence: asking for the events after
  ``N`` of a response that ended at ``N`` or before is ``nothing_to_resume`` (400, ``param: starting_after``). For a
  finished response it is refused before any event is sent; for a live one that ends without passing ``N`` it ends
  the resumed stream.
"""

from __future__ import annotations

from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.stream_log import StreamLog, from_stored
from tether.protocol.errors import nothing_to_resume, response_not_found
from tether.store.base import Store


async def find_resumable(
    live: LiveRegistry, store: Store, tenant: str, response_id: str, resume_token: str | None
) -> LiveResponse:
    """The response to resume.

    Raises:
        ProtocolError: ``response_not_found`` for unknown, expired, another tenant's, or token-less ids.
    """
    running = live.get(response_id)
    if running is not None and running.allows(tenant, resume_token):
        return running
    record = await store.get(tenant, response_id)
    if record is None:
        raise response_not_found(response_id)
    return LiveResponse(record.id, tenant, True, StreamLog(from_stored(record.events), closed=True))


def check_after(live: LiveResponse, after: int) -> None:
    """Refuse a resume that can yield nothing: the response has ended at or before ``after``.

    Raises:
        ProtocolError: ``nothing_to_resume``.
    """
    last = live.log.last_sequence_number
    if live.done and after >= last:
        raise nothing_to_resume(live.response_id, last, after)
