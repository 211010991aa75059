"""Where tether's time goes during one concurrency run: py-spy's samples of the gateway, grouped by component.

py-spy (a PyPI tool, pinned in the dev extras) samples the process from outside. Each sample is charged twice: its
*self* time to the component of its innermost frame that has one (the code that was running; a library without a
component of its own, such as h11 or contextlib, counts for its caller; the self shares add up to 100%), and its
*inclusive* time to every component its stack passes through (a component that calls the whole turn, such as the
server, is inclusive of nearly everything, so inclusive shares overlap and are no ranking of costs).
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# A frame belongs to the first component whose fragment its file's path contains.
COMPONENTS = (
    ("metrics and observers", ("prometheus_client/", "tether/server/metrics", "tether/server/observers")),
    ("upstream HTTP client (httpx2, httpcore2, anyio, h11 as client)", ("httpx2/", "httpcore2/", "anyio/")),
    (
        "WebSocket and HTTP server (uvicorn, starlette, websockets, tether's adapters)",
        ("uvicorn/", "starlette/", "websockets/", "tether/server/"),
    ),
    ("store (SQLite, its worker thread)", ("tether/store/", "concurrent/futures/")),
    ("protocol (parsing, events, stream state)", ("tether/protocol/",)),
    ("engine (turns, lanes, continuation)", ("tether/engine/",)),
    ("providers (tether's side of the upstream call)", ("tether/providers/",)),
    ("logging (structlog)", ("structlog/",)),
    ("event loop and tasks (asyncio, uvloop; time in C code is charged to the Python frame calling it)", ("asyncio/",)),
)
EVENT_LOOP = COMPONENTS[-1][0]  # under every stack: its inclusive share says nothing
OTHER = "other (stacks in no component: start-up, the rest of tether)"
_LINE = re.compile(r":\d+\)$")


@dataclass(slots=True)
class Profile:
    """Samples in all; per component, self (innermost frame) and inclusive (anywhere on the stack); the busiest
    functions by self time (a function's lines together)."""

    samples: int = 0
    self_by_component: dict[str, int] = field(default_factory=dict)
    inclusive_by_component: dict[str, int] = field(default_factory=dict)
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


def component(frame: str) -> str | None:
    """The component a frame (``function (path:line)``) belongs to, if any."""
    return next((name for name, parts in COMPONENTS if any(part in frame for part in parts)), None)


def summarise(path: Path, top: int = 12) -> Profile | None:
    """Group a collapsed-stack file's samples by component, self and inclusive; ``None`` if there is none."""
    if not path.exists():
        return None
    profile = Profile()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        samples = int(count)
        profile.samples += samples
        frames = stack.split(";")
        own[next(filter(None, map(component, reversed(frames))), OTHER)] += samples
        functions[_LINE.sub(")", frames[-1])] += samples
        for name in {component(frame) for frame in frames} - {None, EVENT_LOOP}:
            inclusive[str(name)] += samples
    profile.self_by_component = dict(own.most_common())
    profile.inclusive_by_component = dict(inclusive)
    profile.top_self = functions.most_common(top)
    return profile if profile.samples else None
