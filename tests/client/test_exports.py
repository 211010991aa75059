"""tether.client's public API is exactly its ``__all__``."""

import tether.client


def test_all_names_exist_and_are_unique() -> None:
    exported = tether.client.__all__
    assert len(exported) == len(set(exported))
    for member in exported:
        assert hasattr(tether.client, member), member


def test_public_members_are_listed() -> None:
    public = {
        name
        for name, value in vars(tether.client).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("tether")
    }
    assert public <= set(tether.client.__all__), sorted(public - set(tether.client.__all__))
