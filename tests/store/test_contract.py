"""The store contract, run against memory, SQLite, PostgreSQL and Redis (the ``backend`` fixture's parameters)."""

from __future__ import annotations

from .contract import StoreContract
from .turn_contract import TurnContract


class TestStoreContract(StoreContract):
    pass


class TestTurnContract(TurnContract):
    pass
