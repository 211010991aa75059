"""Resume: finding a response to follow again from a sequence number, for every transport.

A live response is found in memory (``store=false`` ones only with their ``tether:resume_token``, and only within
the resume grace); a finished stored one is replayed from the durable store. Anything else, including another
tenant's response, is ``response_not_found``.
"""

from __future__ import annotations

from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.stream_log import StreamLog
from tether.protocol.errors import response_not_found
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
    return LiveResponse(record.id, tenant, True, StreamLog(record.events, closed=True))
