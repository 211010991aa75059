"""Where tether's time goes during one concurrency run: py-spy's samples of the gateway, grouped by component.

py-spy (a PyPI tool, pinned in the dev extras) samples the process from outside; each sample's stack is charged to
every component it passes through, so a row's share is the share of samples in which that component was running.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# A frame belongs to the component whose fragment its file's path contains.
COMPONENTS = (
    ("upstream HTTP client (httpx2, httpcore2, anyio, h11 as client)", ("httpx2/", "httpcore2/", "anyio/")),
    ("WebSocket and HTTP server (uvicorn, starlette, websockets)", ("uvicorn/", "starlette/", "websockets/")),
    ("store (SQLite, its worker thread)", ("tether/store/", "concurrent/futures/")),
    ("protocol (parsing, events, stream state)", ("tether/protocol/",)),
    ("engine (turns, lanes, continuation)", ("tether/engine/",)),
    ("providers (tether's side of the upstream call)", ("tether/providers/",)),
    ("logging (structlog)", ("structlog/",)),
    ("metrics and observers", ("prometheus_client/", "tether/server/metrics", "tether/server/observers")),
)


@dataclass(slots=True)
class Profile:
    """Samples in all, and per component (a sample counts once per component it passes through)."""

    samples: int = 0
    by_component: dict[str, int] = field(default_factory=dict)
    top_self: list[tuple[str, int]] = field(default_factory=list)


def py_spy() -> Path | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(".venv/bin").resolve()))
    return Path(found) if found else None


@contextlib.contextmanager
def sampling(pid: int, out: Path, rate: int = 100) -> Iterator[None]:
    """py-spy records ``pid`` into ``out`` (collapsed stacks) while the block runs; nothing if py-spy is absent."""
    binary = py_spy()
    if binary is None:
        yield
        return
    command = [str(binary), "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out), "--nonblocking"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def summarise(path: Path) -> Profile | None:
    """Group a collapsed-stack file's samples by component; ``None`` if there is none."""
    if not path.exists():
        return None
    profile = Profile()
    components: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        profile.samples += samples
        frames = stack.split(";")
        leaves[frames[-1]] += samples
        seen = {name for frame in frames for name, parts in COMPONENTS if any(part in frame for part in parts)}
        for name in seen:
            components[name] += samples
    profile.by_component = dict(components.most_common())
    profile.top_self = leaves.most_common(8)
    return profile if profile.samples else None
