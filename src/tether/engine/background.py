"""Background mode: a response that runs on its own, polled, streamed, resumed or cancelled by id.

- ``POST /v1/responses`` with ``background: true`` answers at once with the response as it starts (``queued``); the
  generation goes on without any client, and no follower leaving ever cancels it (see :meth:`Engine.follow`).
- It is a stored response in flight like any other: ``GET`` sees it as far as it has gone, on any node; resume
  follows it; a node that dies ends it ``generation_interrupted``; its ending is committed to the store.
- Cancelling is for background responses only, while they run: a synchronous one, or one that has already ended,
  is refused with OpenAI's ``Cannot cancel a ... response.``; cancelling a cancelled one answers it again.
- A cancel may reach any node: one that does not generate the response asks the generating node through the store
  and answers once the response has ended (:meth:`SharedTurns.cancel_elsewhere`).
"""

from __future__ import annotations

from tether.engine.live import LiveRegistry, LiveResponse
from tether.engine.reads import Reads
from tether.engine.shared_turns import SharedTurns
from tether.protocol.errors import ProtocolError, not_cancellable, server_error
from tether.protocol.events import ResponseObject
from tether.protocol.interrupted import GENERATION_INTERRUPTED
from tether.protocol.progress import IN_FLIGHT_STATUSES, response_so_far
from tether.protocol.stream import response_error_code


async def started(live: LiveResponse) -> ResponseObject:
    """The response as a background create answers it: as its first event left it (``queued``), or as it ended
    when the create is a retry (same idempotency key) of one that has."""
    await live.log.started()
    snapshot = response_so_far(live.log.events if live.done else live.log.events[:1])
    if snapshot is None:  # the generation was cut off (shutdown) before it began
        raise server_error("The response ended before it started.")
    return snapshot


async def cancel(
    live: LiveRegistry, shared: SharedTurns, reads: Reads, tenant: str, response_id: str
) -> ResponseObject:
    """Cancel a background response and answer it as it ended.

    Raises:
        ProtocolError: ``response_not_found`` (unknown ids and other tenants' alike); ``response_not_cancellable``
            for a synchronous response or one that has already ended; ``response_generating_elsewhere`` (409,
            ``retry-after``) when another node generates it and has not ended it within the wait.
    """
    running = live.get(response_id)
    if running is not None and running.tenant == tenant and running.background and running.cancel is not None:
        running.cancel()  # this node generates it: it ends cancelled, unless it was already finishing
        await running.log.ended()
    response = await reads.response(tenant, response_id, any_in_flight=True)
    if not response["background"]:
        raise not_cancellable(None)
    if response["status"] in IN_FLIGHT_STATUSES:  # another node of the cluster generates it
        await shared.cancel_elsewhere(tenant, response_id)
        response = await reads.response(tenant, response_id, any_in_flight=True)
        if _interrupted(response):  # its node died meanwhile: the cluster ended it so
            return response
    status = response["status"]
    if status == "cancelled":
        return response
    if status in IN_FLIGHT_STATUSES:
        raise ProtocolError(
            409,
            "response_generating_elsewhere",
            f"Response '{response_id}' is generating on another node of the cluster, which has not cancelled it "
            "yet; retry the cancel.",
            headers={"retry-after": "1"},
        )
    raise not_cancellable(status)


def _interrupted(response: ResponseObject) -> bool:
    error = response["error"]
    return response["status"] == "failed" and error is not None and response_error_code(error) == GENERATION_INTERRUPTED
