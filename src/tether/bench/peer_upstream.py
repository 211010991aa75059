"""The peer benchmark's upstreams, in a process of their own so that neither gateway nor the client pays for them.

Three fakes on 127.0.0.1, all playing the same tool loop: a Responses server that keeps no state (as vLLM's and
SGLang's ``/v1/responses`` without a store), one that keeps state, and a Chat Completions server. Their URLs go to
stdout as one JSON line; the process ends when its stdin closes.

    python -m tether.bench.peer_upstream --turns 100
"""

from __future__ import annotations

import argparse
import sys

import orjson

from tether.providers.fakes import FakeChatCompletions, FakeResponsesUpstream
from tether.types import JSONObject


def tool_loop(turns: int) -> list[JSONObject]:
    """``turns`` answers that each call ``read_file`` (the client answers every call), then a last text answer."""
    steps: list[JSONObject] = [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": f"src/module_{n}.py"}}]} for n in range(turns)
    ]
    return [*steps, {"text": "Done."}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100, help="tool calls the loop makes before its last answer")
    args = parser.parse_args()
    script = tool_loop(args.turns)
    with (
        FakeResponsesUpstream(script, stateful=False) as stateless,
        FakeResponsesUpstream(script) as stateful,
        FakeChatCompletions(script=script) as chat,
    ):
        urls = {"stateless": stateless.base_url, "stateful": stateful.base_url, "chat": chat.base_url}
        sys.stdout.write(orjson.dumps(urls).decode() + "\n")
        sys.stdout.flush()
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
