"""``tether.netem``'s public API is exactly its ``__all__``, and it stands alone."""

from __future__ import annotations

import subprocess
import sys

import tether.netem


def test_all_names_exist_and_are_unique() -> None:
    exported = tether.netem.__all__
    assert len(exported) == len(set(exported))
    for member in exported:
        assert hasattr(tether.netem, member), member


def test_public_members_are_listed() -> None:
    public = {
        name
        for name, value in vars(tether.netem).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("tether")
    }
    assert public <= set(tether.netem.__all__)


def test_it_imports_nothing_of_the_gateway() -> None:
    code = (
        "import sys, tether.netem; "
        "print(sorted(m for m in sys.modules if m.startswith('tether.') and not m.startswith('tether.netem')))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
