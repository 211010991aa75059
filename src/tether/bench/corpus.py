"""Realistic, deterministic text for workloads: Python source that ships with Python, test logs, diffs."""

from __future__ import annotations

import random
import sysconfig
from functools import cache
from pathlib import Path

_STDLIB_MODULES = (
    "argparse.py", "ast.py", "calendar.py", "configparser.py", "csv.py", "dataclasses.py", "difflib.py",
    "enum.py", "fractions.py", "functools.py", "gettext.py", "heapq.py", "inspect.py", "ipaddress.py",
    "logging/__init__.py", "pathlib.py", "pprint.py", "shlex.py", "statistics.py", "string.py", "textwrap.py",
    "tokenize.py", "typing.py", "uuid.py", "zipfile.py", "json/decoder.py", "json/encoder.py",
    "email/message.py", "http/cookies.py", "urllib/parse.py",
)  # fmt: skip


@cache
def _stdlib_sources() -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for name in _STDLIB_MODULES:
        path = root / name
        if path.exists():
            sources.append(path.read_text(encoding="utf-8", errors="replace"))
    if not sources:  # an unusual Python without its stdlib sources: fall back to generated code
        sources.append(_generated_source(random.Random(0), 64_000))
    return tuple(sources)


def source_file(rng: random.Random, size: int) -> str:
    """About ``size`` characters of real Python source, starting at a line boundary."""
    text = rng.choice(_stdlib_sources())
    if len(text) <= size:
        return text
    start = text.rfind("\n", 0, rng.randrange(0, len(text) - size)) + 1
    return text[start : start + size]


def pytest_log(rng: random.Random, size: int, failing: int = 1) -> str:
    """A pytest-style run log of about ``size`` characters with ``failing`` failures and a traceback each."""
    lines = ["============================= test session starts ==============================",
             "platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0", "rootdir: /workspace/project",
             "collected 412 items", ""]  # fmt: skip
    modules = ["tests/test_parser.py", "tests/test_lexer.py", "tests/test_cli.py", "tests/test_config.py"]
    while sum(len(line) + 1 for line in lines) < size * 0.7:
        module = rng.choice(modules)
        lines.append(
            f"{module} "
            + "".join(rng.choice("....................F.s") for _ in range(60))
            + f" [{rng.randrange(1, 100):3d}%]"
        )
    lines += ["", "=================================== FAILURES ==================================="]
    for index in range(failing):
        lines += [f"_______________________ test_roundtrip_case_{index} _______________________", "",
                  "    def test_roundtrip_case(self):", "        tree = parse(SOURCE)",
                  ">       assert render(tree) == SOURCE", "E       AssertionError: assert 'x = 1\\n' == 'x = 1'", "",
                  "tests/test_parser.py:88: AssertionError"]  # fmt: skip
    while sum(len(line) + 1 for line in lines) < size:
        lines.append(f"WARNING  parser:parser.py:{rng.randrange(10, 900)} deprecated token {rng.randrange(1000)}")
    lines.append(
        f"========== {failing} failed, {411 - failing} passed, 1 skipped in 3.{rng.randrange(10, 99)}s =========="
    )
    return "\n".join(lines)[:size]


def diff(rng: random.Random, path: str, size: int) -> str:
    """A unified diff of about ``size`` characters against real-looking source."""
    before = source_file(rng, max(size // 2, 200)).splitlines()
    out = [f"--- a/{path}", f"+++ b/{path}"]
    while sum(len(line) + 1 for line in out) < size and before:
        start = rng.randrange(1, 400)
        hunk = before[: rng.randrange(3, 9)]
        before = before[len(hunk) :]
        out.append(f"@@ -{start},{len(hunk)} +{start},{len(hunk) + 1} @@")
        out += [f" {line}" for line in hunk[:-1]]
        out += [f"-{hunk[-1]}", f"+{hunk[-1].rstrip()}  # fixed", "+    return result"]
    return "\n".join(out)[:size]


def _generated_source(rng: random.Random, size: int) -> str:
    lines: list[str] = []
    while sum(len(line) + 1 for line in lines) < size:
        name = f"handler_{rng.randrange(10_000)}"
        lines += [f"def {name}(request, *, retries=3):", "    result = compute(request.payload)",
                  "    return result", ""]  # fmt: skip
    return "\n".join(lines)
