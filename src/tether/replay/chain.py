"""Loading a chain from the durable store: every response from the root to the one asked for."""

from __future__ import annotations

from dataclasses import dataclass

from tether.protocol.errors import response_not_found
from tether.store.base import ResponseRecord, Store
from tether.types import Item


@dataclass(frozen=True, slots=True)
class ChainTurn:
    """One response of a chain, with the context it sampled from (everything before it, then its input)."""

    record: ResponseRecord
    sampled: list[Item]

    @property
    def context_after(self) -> list[Item]:
        return [*self.sampled, *self.record.output_items]


async def load_chain(store: Store, tenant: str, response_id: str, *, max_depth: int = 100_000) -> list[ChainTurn]:
    """The chain ending at ``response_id``, oldest first.

    Raises:
        ProtocolError: ``response_not_found`` when it or an ancestor is missing (deleted, expired, another tenant's).
    """
    records: list[ResponseRecord] = []
    next_id: str | None = response_id
    while next_id is not None and len(records) < max_depth:
        record = await store.get(tenant, next_id)
        if record is None:
            raise response_not_found(next_id)
        records.append(record)
        next_id = record.parent_id
    records.reverse()
    turns: list[ChainTurn] = []
    context: list[Item] = []
    for record in records:
        sampled = [*context, *record.input_items]
        turns.append(ChainTurn(record, sampled))
        context = [*sampled, *record.output_items]
    return turns
