"""Start-up helpers: what the server says about itself must never carry a secret."""

from __future__ import annotations

import pytest

from tether.server.startup import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://tether:s3cret@db:5432/tether", "postgresql://tether:***@db:5432/tether"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://db/tether?password=s3cret", "postgresql://db/tether?password=***"),
        (
            "postgresql://db/tether?sslmode=require&PASSWORD=s3cret&schema=a",
            "postgresql://db/tether?sslmode=require&PASSWORD=***&schema=a",
        ),
        ("postgresql://db/tether?user=u&sslpassword=s3cret", "postgresql://db/tether?user=u&sslpassword=***"),
        ("redis://127.0.0.1:6379/0?password=s3cret", "redis://127.0.0.1:6379/0?password=***"),
        ("sqlite:///.tether/tether.db", "sqlite:///.tether/tether.db"),
    ],
)
def test_a_store_url_is_shown_without_its_password(url: str, shown: str) -> None:
    """A password in the query string (libpq and redis-py read one there too) was logged in server.listening."""
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
