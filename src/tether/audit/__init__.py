"""The audit log: an append-only, hash-chained record per tenant of every stored turn and administrative act."""

from tether.audit.chain import GENESIS, Problem, seal, verify
from tether.audit.log import AuditLog

__all__ = ["GENESIS", "AuditLog", "Problem", "seal", "verify"]
