"""Upload on the bad link, direct vs through ``tether edge``, for each agent API (a short benchmark arm).

For each API (anthropic-messages, chat-completions, responses) one benchmark task is played by an agent that sends
what real agents send: the whole history, the tool schemas (~32 KB) and the system prompt (~7 KB) on every request.

- ``direct``: the agent talks to the upstream across the shaping proxy (a same-API fake for Messages and Chat, a
  ``tether serve`` for stateless Responses).
- ``edge``: the agent talks to ``tether edge`` on loopback; the proxy sits between the edge and the gateway.

The figure is the bytes the proxy forwarded in each direction over the whole task (TCP payload: HTTP, SSE and
WebSocket framing included, after permessage-deflate). ``cold`` is the first task on a fresh gateway; ``warm`` the
same task after the agent's previous task (another task with the same tools and system prompt) already ran.

    python -m tether.bench.edge_upload [--seed 1] [--profile loopback]

Bytes do not depend on the profile's rate or delay (only time does); the default profile is unshaped so a short
run stays short on a loaded machine. ``task s`` is the wall time of the measured task (meaningful on a shaped
profile, e.g. ``--profile inflight-atg``; on a loaded machine, a rough figure).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx2 as httpx

from tether.bench.agent_turns import APIS, AgentAPI, AgentConversation, claude_code_sized, scripts_by_model
from tether.bench.workloads import Task, standard_tasks
from tether.edge.app import EdgeConfig
from tether.edge.link import LinkOptions
from tether.edge.run import edge_in_thread, link_url
from tether.netem.proxy import ShapingProxy
from tether.netutil import free_port
from tether.protocol.edge_wire import PATH
from tether.providers.fakes import FakeAnthropic, FakeChatCompletions
from tether.server.runner import serve_in_thread
from tether.settings import Settings

Post = Callable[[str, dict[str, Any]], bytes]


def play(api: AgentAPI, task: Task, post: Post) -> int:
    """Play ``task`` as an agent of ``api`` against ``post``; returns the number of requests."""
    conversation = AgentConversation(api, task)
    while not conversation.done:
        conversation.read(post(conversation.path, conversation.request()))
    return conversation.turn


@dataclass(frozen=True, slots=True)
class Measure:
    api: str
    arm: str
    up: int
    down: int
    requests: int
    seconds: float


@contextmanager
def _upstream(api: AgentAPI, tasks: Sequence[Task], directory: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The upstream the gateway (or the direct agent) talks to: its base URL and the gateway settings for it."""
    if api == "anthropic-messages":
        with FakeAnthropic() as fake:
            fake.scripts = scripts_by_model(api, tasks)
            yield fake.base_url, {"providers": {"up": {"kind": "anthropic", "base_url": fake.base_url}},
                                  "routes": [{"model": "*", "provider": "up"}]}  # fmt: skip
    elif api == "chat-completions":
        with FakeChatCompletions() as fake:
            fake.scripts = scripts_by_model(api, tasks)
            yield fake.base_url, {"providers": {"up": {"kind": "chat-completions", "base_url": fake.base_url}},
                                  "routes": [{"model": "*", "provider": "up"}]}  # fmt: skip
    else:
        scripts = directory / "scripts.json"
        scripts.write_text(json.dumps({"scripts": {task.name: task.script() for task in tasks}}))
        yield "", {"scripted": {"scripts_file": str(scripts)}}


def measure(api: AgentAPI, tasks: Sequence[Task], profile: str, *, through_edge: bool, warm: bool) -> Measure:
    """Bytes across the proxy while the last of ``tasks`` is played (the ones before it warm the gateway)."""
    with TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        upstream_url, gateway_settings = stack.enter_context(_upstream(api, tasks, directory))
        settings = Settings.model_validate({"store_url": "memory://", "log_level": "warning", **gateway_settings})
        if through_edge or api == "responses":
            gateway = stack.enter_context(serve_in_thread(settings))
            target = ("127.0.0.1", gateway.port)
        else:
            host_port = upstream_url.split("//", 1)[1].split("/", 1)[0]
            target = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))
        proxy = stack.enter_context(ShapingProxy(target[0], target[1], profile).start_in_thread())
        client = stack.enter_context(httpx.Client(timeout=300))
        if through_edge:
            ws_url, origin = link_url(f"http://127.0.0.1:{proxy.port}/v1")
            config = EdgeConfig(LinkOptions(ws_url, http_url=origin + PATH), origin)
            edge = stack.enter_context(edge_in_thread(config, port=free_port()))
            base = edge.base_url
        else:
            base = f"http://127.0.0.1:{proxy.port}"

        def post(path: str, body: dict[str, Any]) -> bytes:
            reply = client.post(base + path, json=body)
            reply.raise_for_status()
            return reply.content

        for task in tasks[:-1] if warm else ():
            play(api, task, post)
        before = proxy.stats()
        started = time.perf_counter()
        requests = play(api, tasks[-1], post)
        seconds = time.perf_counter() - started
        after = proxy.stats()
        arm = ("edge" if through_edge else "direct") + (" warm" if warm else " cold")
        up, down = after.up.bytes - before.up.bytes, after.down.bytes - before.down.bytes
        return Measure(api, arm, up, down, requests, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.bench.edge_upload", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="loopback")
    parser.add_argument("--apis", default=",".join(APIS))
    args = parser.parse_args(argv)
    apis = [api for api in APIS if api in args.apis.split(",")]
    first, second = (claude_code_sized(task) for task in standard_tasks(args.seed)[:2])
    print(f"{'api':<20}{'arm':<14}{'requests':>9}{'up bytes':>12}{'down bytes':>12}{'up vs direct':>14}{'task s':>9}")
    for api in apis:
        direct = measure(api, [first, second], args.profile, through_edge=False, warm=False)
        rows = [direct]
        for warm in (False, True):
            rows.append(measure(api, [first, second], args.profile, through_edge=True, warm=warm))
        for row in rows:
            saved = "" if row is direct else f"{1 - row.up / direct.up:.1%} less"
            print(
                f"{row.api:<20}{row.arm:<14}{row.requests:>9}{row.up:>12}{row.down:>12}{saved:>14}{row.seconds:>9.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
