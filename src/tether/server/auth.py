"""API keys → tenants."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from tether.protocol.errors import ErrorType, ProtocolError

ANONYMOUS_TENANT = "default"


def key_id(api_key: str) -> str:
    """A short, stable fingerprint of an API key for logs and the audit log (the key cannot be recovered)."""
    return "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: its tenant, and the fingerprint of its API key (``None`` with open access)."""

    tenant: str
    key_id: str | None = None


class Authenticator:
    """Maps the credentials of a request to its tenant.

    With no keys configured every request belongs to one tenant (the server binds to 127.0.0.1 by default). With
    keys, each key is a tenant and a request without a valid key is refused with 401.
    """

    def __init__(self, api_keys: Mapping[str, str]) -> None:
        self._keys = dict(api_keys)

    @property
    def open(self) -> bool:
        return not self._keys

    def key_ids(self) -> list[str]:
        """The fingerprints of the configured keys, sorted."""
        return sorted(key_id(key) for key in self._keys)

    def tenant(self, headers: Mapping[str, str]) -> str:
        """Return the tenant of a request's headers.

        Raises:
            ProtocolError: 401 ``invalid_api_key`` when keys are configured and none of them was presented.
        """
        return self.identify(headers).tenant

    def identify(self, headers: Mapping[str, str]) -> Identity:
        """Return the tenant and key fingerprint of a request's headers.

        Raises:
            ProtocolError: 401 ``invalid_api_key`` when keys are configured and none of them was presented.
        """
        if not self._keys:
            return Identity(ANONYMOUS_TENANT)
        presented = _presented_key(headers)
        if presented is not None:
            for key, tenant in self._keys.items():
                if hmac.compare_digest(key.encode(), presented.encode()):
                    return Identity(tenant, key_id(key))
        raise ProtocolError(
            401,
            "invalid_api_key",
            "Missing or incorrect API key. Send it as 'Authorization: Bearer <key>'.",
            error_type=ErrorType.AUTHENTICATION,
        )


def _presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    api_key = (headers.get("x-api-key") or headers.get("api-key") or "").strip()
    return api_key or None  # a blank header presents no key
