"""``/inspect``: rendered by headless Chromium (in a network namespace with only loopback) with DOM assertions that
the chains, their turns and the bytes saved are shown; and who may see it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.requests import Request

from tether.protocol.errors import ProtocolError
from tether.server.inspect_page import authorize

from .wire import ServerFactory

DRIVER = Path(__file__).with_name("inspect_browser.py")


class Dom(HTMLParser):
    """Elements by their ``data-*`` and ``id`` attributes, with the text inside each element with an id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag not in ("input", "br", "meta"):
            self._open.append(attributes.get("id"))
            if attributes.get("id"):
                self.text_by_id[str(attributes["id"])] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("input", "br", "meta") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self._open:
            if element_id:
                self.text_by_id[element_id] += data

    def with_attribute(self, name: str, value: str) -> list[dict[str, str | None]]:
        return [attributes for _, attributes in self.elements if attributes.get(name) == value]


def browser_available() -> str | None:
    for tool in ("chromium", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs chromium)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return None if probe.returncode == 0 else "unshare -n is not permitted here"


def expected_saved(turns: list[dict[str, Any]]) -> dict[str, int]:
    """Per response: the compact-JSON size of its equivalent stateless request minus what the client sent."""
    contexts: dict[str, list[Any]] = {}
    saved = {}
    for turn in turns:
        body, response = turn["body"], turn["response"]
        parent = body.get("previous_response_id")
        context = [*(contexts[parent] if parent else []), *body["input"]]
        stateless = len(json.dumps({"model": body["model"], "input": context}, separators=(",", ":")))
        saved[response["id"]] = stateless - turn["sent"]
        contexts[response["id"]] = [*context, *response["output"]]
    return saved


def test_headless_chromium_shows_the_chains_turns_and_bytes_saved(tmp_path: Path) -> None:
    missing = browser_available()
    if missing is not None:
        pytest.skip(missing)
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(DRIVER), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    dom = Dom((tmp_path / "dom.html").read_text())
    turns = json.loads((tmp_path / "ledger.json").read_text())
    saved = expected_saved(turns)

    http_root, ws_root = turns[0]["response"]["id"], turns[3]["response"]["id"]
    assert dom.with_attribute("class", "tenant")[0]["data-tenant"] == "default"
    assert {str(a["data-chain"]) for a in dom.with_attribute("class", "chain")} == {http_root, ws_root}
    rows = {str(a["data-response-id"]): a for a in dom.with_attribute("class", "turn")}
    assert set(rows) == set(saved)
    for response_id, figure in saved.items():
        assert rows[response_id]["data-bytes-saved"] == str(figure)
    assert dom.text_by_id["saved-total"] == str(sum(saved.values()))
    assert sum(saved.values()) > 0
    assert dom.text_by_id["connections"] == "0"
    assert dom.text_by_id["turn-count"] == "5"
    assert len(dom.with_attribute("class", "mark")) >= 5 * 5  # request, resolved, upstream, first token, ... per turn


def request(headers: dict[str, str] | None = None, query: str = "") -> Request:
    raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    return Request(
        {"type": "http", "method": "GET", "path": "/inspect", "headers": raw, "query_string": query.encode()}
    )


def test_access_without_an_admin_key_is_for_loopback_only() -> None:
    authorize(request(), None, "127.0.0.1")
    with pytest.raises(ProtocolError) as refused:
        authorize(request(), None, "0.0.0.0")
    assert refused.value.status == 403


def test_a_configured_admin_key_is_required_as_bearer_or_query() -> None:
    authorize(request({"authorization": "Bearer s3cret-admin"}), "s3cret-admin", "0.0.0.0")
    authorize(request(query="key=s3cret-admin"), "s3cret-admin", "127.0.0.1")
    for wrong in (request(), request({"authorization": "Bearer nope"}), request(query="key=")):
        with pytest.raises(ProtocolError) as refused:
            authorize(wrong, "s3cret-admin", "127.0.0.1")
        assert refused.value.status == 401
    with pytest.raises(ProtocolError):
        authorize(request(query="key="), "", "127.0.0.1")  # a named but unset variable lets nobody in


def test_the_server_applies_the_admin_key_and_can_switch_the_page_off(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_TEST_ADMIN_KEY", "s3cret-admin")
    server = make_server(admin_key_env="TETHER_TEST_ADMIN_KEY")
    page = f"http://{server.host}:{server.port}/inspect"
    assert httpx.get(page).status_code == 401
    shown = httpx.get(page, headers={"authorization": "Bearer s3cret-admin"})
    assert shown.status_code == 200
    assert "tether inspector" in shown.text
    assert httpx.get(page + "?format=json&key=s3cret-admin").json()["live"]["websocket_connections"] == 0


def test_a_switched_off_inspector_is_not_there(make_server: ServerFactory) -> None:
    server = make_server(inspector_enabled=False)
    assert httpx.get(f"http://{server.host}:{server.port}/inspect").status_code == 404
