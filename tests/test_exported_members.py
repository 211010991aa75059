"""Each package's public API is exactly its ``__all__``, and every name in it exists."""

import importlib

import pytest

PACKAGES = [
    "tether",
    "tether.protocol",
    "tether.protocol.agent_apis",
    "tether.engine",
    "tether.store",
    "tether.providers",
    "tether.server",
    "tether.testing",
    "tether.netem",
    "tether.providers.fakes",
    "tether.client",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    for member in exported:
        assert hasattr(module, member), f"{name}.{member} is in __all__ but missing"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_members_are_listed(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_")
        and getattr(value, "__module__", "").startswith("tether")
        and not isinstance(value, type(module))
    }
    assert public <= set(module.__all__), f"{name} exposes {sorted(public - set(module.__all__))} without __all__"
