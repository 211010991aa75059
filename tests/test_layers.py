"""The imports follow design.md's layer table: every arrow between tether's layers points down it.

Each module under ``src/tether`` is read with ``ast`` (nothing is imported), so an import inside a function or under
``TYPE_CHECKING`` counts too. A module's layer is its folder under ``tether/`` (``engine``, ``providers``, ...) or,
at the top level, its own name (``types``, ``netutil``, ``settings``, ``cli``, ``testing``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[1] / "src" / "tether"

# Import nothing of tether, and may be imported by any layer.
EVERYWHERE = frozenset({"types", "netutil"})
ANYTHING = frozenset({"*"})

# design.md, "Layers": what each layer may import besides itself and EVERYWHERE. An entry names a layer, or a
# module within one (the engine reaches providers through their interface only).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "types": frozenset(),
    "netutil": frozenset(),
    "settings": frozenset(),
    "settings_file": frozenset({"settings"}),  # reading the config file, for cli.py
    "protocol": frozenset(),
    "store": frozenset({"protocol"}),
    "audit": frozenset({"protocol"}),  # the audit log's hash chain and files; fed by server/, read by cli.py
    "providers": frozenset({"protocol"}),
    "engine": frozenset({"protocol", "store", "providers.base"}),
    "client": frozenset({"protocol"}),
    "server": frozenset({"protocol", "engine", "store", "providers", "audit", "settings", "settings_file"}),
    "edge": frozenset({"client", "protocol", "server", "settings", "settings_file"}),
    "replay": frozenset({"protocol", "engine", "store", "providers", "server", "settings", "settings_file"}),
    "cli": ANYTHING,
    "testing": ANYTHING,
    "bench": ANYTHING,
    "__main__": frozenset({"cli"}),
}
# Layers that import nothing of tether at all, not even EVERYWHERE.
ISOLATED = frozenset({"types", "netutil", "netem"})


def layer_of(module: str) -> str:
    """``tether.engine.turn`` → ``engine``; ``tether.types`` → ``types``; ``tether`` → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every tether module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from tether import engine`` imports the engine package.
            names = [f"{target}.{alias.name}" for alias in node.names] if target == "tether" else [target]
            yield from ((node.lineno, name) for name in names)


def allowed(source_layer: str, target: str) -> bool:
    target_layer = layer_of(target)
    if target_layer in ("", source_layer):
        return True
    if source_layer in ISOLATED:
        return False
    if target_layer in EVERYWHERE:
        return True
    rules = MAY_IMPORT[source_layer]
    within = target.removeprefix("tether.")
    return rules is ANYTHING or any(within == rule or within.startswith(rule + ".") for rule in rules)


def modules() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_every_module_is_in_a_known_layer() -> None:
    unknown = sorted({layer_of(module_name(p)) for p in modules()} - set(MAY_IMPORT) - ISOLATED - {""})
    assert not unknown, f"layers {unknown} are not in design.md's table (add them there and to MAY_IMPORT)"


def test_imports_point_down_the_layer_table() -> None:
    wrong = []
    for path in modules():
        source_layer = layer_of(module_name(path))
        if source_layer not in MAY_IMPORT and source_layer not in ISOLATED:
            continue  # reported by the test above
        for line, target in imported_modules(path):
            if (target == "tether" or target.startswith("tether.")) and not allowed(source_layer, target):
                wrong.append(f"{path.relative_to(SOURCE.parent)}:{line}: {source_layer} imports {target}")
    assert not wrong, "arrows design.md's layer table forbids:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("providers", "tether.server.runner", False),
        ("providers", "tether.settings", False),
        ("providers", "tether.netutil", True),
        ("engine", "tether.providers.base", True),
        ("engine", "tether.providers.router", False),
        ("store", "tether.engine.cache", False),
        ("edge", "tether.engine", False),
        ("netem", "tether.types", False),
        ("server", "tether.settings", True),
        ("bench", "tether.server.runner", True),
    ],
)
def test_the_rule_itself(source: str, target: str, expected: bool) -> None:
    assert allowed(source, target) is expected
