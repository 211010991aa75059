"""``GET /health`` every 50 ms from a process of its own, until its stdin closes. It prints ``ready`` once its first
answer is in (that one is not counted: it pays for the poller's own first request, lazy imports and all), and at the
end one JSON line: ``{"latencies": [seconds, ...], "failures": n}``.

    python tests/server/health_poller.py http://127.0.0.1:PORT/health

A process of its own, so that what it measures is the server: a poller in the test's process waits for the GIL
behind the test's own threads (16 of them encoding, compressing and masking 16 MiB messages), and measured
up to 0.5 s of its own waiting that way. It asks for a higher scheduling priority where it may (root in CI) for
the same reason: on two shared cores a process that is ready to run can wait its turn for tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

import httpx2 as httpx

INTERVAL_S = 0.05


def main(url: str) -> None:
    with contextlib.suppress(PermissionError):
        os.nice(-10)
    stopped = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        stopped.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    latencies: list[float] = []
    failures = 0
    with httpx.Client(timeout=120) as client:
        client.get(url).raise_for_status()
        print("ready", flush=True)
        while not stopped.is_set():
            started = time.perf_counter()
            try:
                answered = client.get(url).status_code == 200
            except httpx.TransportError:
                answered = False
            latencies.append(time.perf_counter() - started)
            failures += not answered
            stopped.wait(INTERVAL_S)
    print(json.dumps({"latencies": latencies, "failures": failures}))


if __name__ == "__main__":
    main(sys.argv[1])
