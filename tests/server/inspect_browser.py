"""Run inside ``unshare -n`` (a network namespace with only loopback): a tether server, a known workload, then headless
Chromium (background networking off) dumping the DOM of ``/inspect`` and taking a screenshot.

Usage: ``unshare -n python inspect_browser.py WORKDIR [SCREENSHOT]``. Writes ``WORKDIR/dom.html`` and
``WORKDIR/ledger.json`` (what the client sent and received, for the test's own arithmetic).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
from websockets.asyncio.client import connect

from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import Settings

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--window-size=1400,900",
)


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


async def workload(server: RunningServer) -> list[dict[str, Any]]:
    """Two chains (HTTP, then WebSocket), a resume; returns each turn's request as sent and response as received."""
    turns: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        previous = None
        for text in ("plan the trip", "book the train", "and the hotel"):
            body: dict[str, Any] = {"model": "echo", "input": [message(text)]}
            if previous:
                body["previous_response_id"] = previous
            raw = json.dumps(body, separators=(",", ":")).encode()
            response = (
                await client.post("/responses", content=raw, headers={"content-type": "application/json"})
            ).json()
            turns.append({"body": body, "sent": len(raw), "response": response})
            previous = response["id"]
        async with client.stream("GET", f"/responses/{previous}?stream=true&starting_after=2") as resumed:
            await resumed.aread()
    async with connect(server.ws_url) as ws:
        previous = None
        for text in ("summarise the notes", "shorter please"):
            body = {"model": "echo", "input": [message(text)]}
            if previous:
                body["previous_response_id"] = previous
            frame = json.dumps({"type": "response.create", **body}, separators=(",", ":"))
            await ws.send(frame)
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if event["type"] == "response.completed":
                    break
            turns.append({"body": body, "sent": len(frame.encode()), "response": event["response"]})
            previous = event["response"]["id"]
    return turns


def chromium(arguments: list[str]) -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed")
    done = subprocess.run([binary, *CHROMIUM_FLAGS, *arguments], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def main(workdir: Path, screenshot: Path | None) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    settings = Settings(store_url=f"sqlite:///{workdir / 'tether.db'}", log_level="warning")
    profile = workdir / "chromium-profile"
    with serve_in_thread(settings) as server:
        turns = asyncio.run(workload(server))
        url = f"http://{server.host}:{server.port}/inspect"
        dom = chromium([f"--user-data-dir={profile}", "--dump-dom", url])
        if screenshot is not None:
            chromium([f"--user-data-dir={profile}", f"--screenshot={screenshot}", url])
    (workdir / "dom.html").write_text(dom)
    (workdir / "ledger.json").write_text(json.dumps(turns))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
