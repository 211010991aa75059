"""The ``Store`` interface: the durable state of stored responses, and the cluster's turns.

Four implementations share it and one contract suite (``tests/store/contract.py`` and ``turn_contract.py``): memory
and SQLite serve one node (SQLite is the default), and PostgreSQL and Redis serve a cluster.

- Responses: a response is a node, made of its parent, the *new* input items of its request and its output items.
  Items are stored once, addressed by the hash of their canonical JSON (:func:`tether.protocol.items.fingerprint`).
  Every so often the engine attaches a *snapshot* (the hashes of the response's whole context), so rebuilding any
  context reads a bounded number of rows. The response's events are kept with it, as opaque JSON objects.
- Edge content: what ``tether edge`` chains are rebuilt from (the requests the gateway rebuilt and their large
  parts, :mod:`tether.server.edge_content`), by content hash per tenant, each blob kept until its expiry. It is the
  edge link's cache, not response storage: any node continues any edge chain from it, and a miss costs the edge
  one whole request.
- Turns (:mod:`tether.store.turns`): claims by idempotency key, leases with fencing tokens, and the shared log of
  a turn in flight. With these, any node can follow or resume a turn another node is generating. One-node stores
  keep them in process memory (:mod:`tether.store.local_turns`).

All reads are scoped by tenant: another tenant's response is indistinguishable from a missing one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from tether.store.turns import Claim, InterruptEvents, Lease, Renewal, TurnRead
from tether.types import Item, JSONObject


class StoreDamagedError(Exception):
    """A stored row cannot be read back: the disk's fault, not a bug. The message names the file and what to run.

    Every transport answers it with ``server_error`` and one ``store.damaged`` log line, never a traceback.
    """


@dataclass(slots=True)
class ResponseRecord:
    """One stored response.

    Attributes:
        depth: number of ancestors (0 for a root).
        params: the request parameters as forwarded (everything but ``input`` and transport fields).
        input_items / input_hashes / input_ids: the new input items of the request, their content hashes, and the
            ids they are listed under by ``input_items``.
        output_items / output_hashes: the response's output and its content hashes.
        events: the stream log (every event with its ``sequence_number``).
        snapshot: when set, the hashes of the whole context of this response (its sampled context and its
            output), in order.
        expires_at: unix time after which the response is gone; ``None`` keeps it forever.
    """

    id: str
    tenant: str
    parent_id: str | None
    depth: int
    model: str
    status: str
    created_at: int
    completed_at: int | None
    params: JSONObject
    input_items: list[Item]
    input_hashes: list[str]
    input_ids: list[str]
    output_items: list[Item]
    output_hashes: list[str]
    usage: JSONObject | None
    error: JSONObject | None
    incomplete_details: JSONObject | None
    expires_at: float | None
    events: list[JSONObject] = field(default_factory=list)
    snapshot: list[str] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class StoredContext:
    """A response's whole context (sampled context followed by its output), with each item's hash."""

    items: list[Item]
    hashes: list[str]


class Store(Protocol):
    """Durable storage of responses, and the cluster's turns.

    Implementations: memory and SQLite (one node; the default), PostgreSQL and Redis (a cluster).
    """

    async def put(self, record: ResponseRecord) -> None:
        """Store a response and its items (items already stored are not written again)."""

    async def get(self, tenant: str, response_id: str) -> ResponseRecord | None:
        """The tenant's response, or ``None`` if it is missing, deleted, expired or another tenant's."""

    async def load_context(self, tenant: str, response_id: str) -> StoredContext | None:
        """Rebuild the whole context of a response from the nearest snapshot and the deltas after it."""

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Hide a response from every read. Returns ``False`` if there was nothing visible to delete."""

    async def find_by_idempotency_key(self, tenant: str, key: str) -> ResponseRecord | None:
        """The tenant's response created with this idempotency key, if any."""

    async def purge_expired(self, now: float) -> int:
        """Remove expired responses; returns how many were removed."""

    async def close(self) -> None:
        """Release connections and files."""

    # -- edge content (tether.server.edge_content) ----------------------------------------------------------

    async def put_edge_blobs(self, tenant: str, blobs: Mapping[str, bytes], expires_at: float) -> None:
        """Keep the tenant's edge content by content hash until ``expires_at`` (a blob already kept takes that
        expiry); ``purge_expired`` removes expired blobs."""

    async def get_edge_blobs(self, tenant: str, digests: Collection[str]) -> dict[str, bytes]:
        """The tenant's kept, unexpired blobs among ``digests``."""

    # -- the cluster (tether.store.turns explains the model) ----------------------------------------------------

    async def claim_turn(self, tenant: str, response_id: str, *, key: str | None, node: str, lease_s: float) -> Claim:
        """Claim a new turn for ``node``; with an idempotency ``key``, only if no live or finished turn holds it."""

    async def renew_lease(self, lease: Lease, lease_s: float) -> Renewal:
        """Extend a running turn's lease (the heartbeat): ``HELD``, or ``CANCEL_REQUESTED`` once a node asked for
        its cancellation (:meth:`request_cancel`); ``LOST``, extending nothing, once the lease is fenced off."""

    async def request_cancel(self, tenant: str, response_id: str) -> bool:
        """Mark the tenant's running turn for cancellation, for the node holding its lease to read at its next
        heartbeat. ``False`` (nothing marked) when there is no such turn or it has ended."""

    async def append_events(self, lease: Lease, events: list[JSONObject]) -> bool:
        """Append events to the turn's shared log (each at its ``sequence_number``; ones already there are skipped).

        Returns ``False``, writing nothing, once the lease is fenced off.
        """

    async def finish_turn(self, lease: Lease, record: ResponseRecord | None, events: list[JSONObject]) -> bool:
        """Commit a turn in one step: store ``record`` (``None``: nothing to keep), append its last events and
        mark it done. ``False``, writing nothing, once the lease is fenced off."""

    async def read_turn(self, tenant: str, response_id: str, after: int) -> TurnRead | None:
        """The tenant's turn and its events after ``after``; ``None`` if there is no such turn."""

    async def wait_turn(self, response_id: str, after: int, timeout_s: float) -> None:
        """Return once events after ``after`` may have arrived or the turn's state may have changed, or after
        ``timeout_s`` (callers re-read; a spurious return is harmless)."""

    async def interrupt_turn(self, response_id: str, build: InterruptEvents, *, lease: Lease | None = None) -> bool:
        """If the turn is running and its lease expired (or ``lease`` still holds it: its node gives it up), append
        ``build(next sequence number)``, mark it interrupted and release its idempotency key. ``True`` if this call
        interrupted it."""

    async def is_visible(self, tenant: str, response_id: str) -> bool:
        """Whether the tenant's stored response exists and is neither deleted nor expired (a one-row check that
        keeps node-local caches coherent with deletes made on other nodes)."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""


@dataclass(slots=True)
class StoreStats:
    """Read counters, for tests and metrics.

    Attributes:
        response_rows_read: response rows (records) read, by every read method.
        item_rows_read: item bodies read.
    """

    response_rows_read: int = 0
    item_rows_read: int = 0


def check_record(record: ResponseRecord) -> None:
    """Reject a record whose parallel lists disagree in length.

    Raises:
        ValueError: if ``input_items``/``input_hashes``/``input_ids`` or ``output_items``/``output_hashes`` differ
            in length.
    """
    if not len(record.input_items) == len(record.input_hashes) == len(record.input_ids):
        raise ValueError(f"response {record.id}: input items, hashes and ids differ in length")
    if len(record.output_items) != len(record.output_hashes):
        raise ValueError(f"response {record.id}: output items and hashes differ in length")
