"""The code in the README and in docs/ runs as written (against a real server where it talks to one).

Every ``python`` block runs in a fresh interpreter with ``http://127.0.0.1:8000`` pointed at a test server; every
``toml`` block loads as a config file and passes the start-up checks. A block that cannot run on its own says why,
in a ``<!-- not run: reason -->`` line right above it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether.server.runner import RunningServer, serve_in_thread
from tether.server.startup import preflight
from tether.settings import Settings
from tether.settings_file import load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")
DOCUMENTED_PORT = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Block:
    source: Path
    line: int
    language: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}"


def blocks(language: str) -> list[Block]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) != language:
                continue
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = NOT_RUN.search(before)
            found.append(Block(path, line, language, match.group(2), reason.group(1) if reason else None))
    return found


PYTHON = blocks("python")
TOML = blocks("toml")


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("docs")
    with serve_in_thread(Settings(store_url=f"sqlite:///{directory / 'docs.db'}", log_level="warning")) as server:
        yield server


def test_there_are_examples_to_run() -> None:
    assert len(PYTHON) >= 4
    assert len(TOML) >= 3


@pytest.mark.parametrize("block", PYTHON, ids=[block.name for block in PYTHON])
def test_python_example_runs(block: Block, docs_server: RunningServer, tmp_path: Path) -> None:
    if block.not_run is not None:
        pytest.skip(f"not run: {block.not_run}")
    code = block.code.replace(DOCUMENTED_PORT, f"http://{docs_server.host}:{docs_server.port}")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("block", TOML, ids=[block.name for block in TOML])
def test_toml_example_loads_and_passes_the_start_up_checks(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.not_run is not None:
        pytest.skip(f"not run: {block.not_run}")
    config = tmp_path / "tether.toml"
    config.write_text(block.code)
    environ = {name: "example-key" for name in re.findall(r'api_key_env\s*=\s*"([^"]+)"', block.code)}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(config, environ)
    asyncio.run(preflight(settings))
