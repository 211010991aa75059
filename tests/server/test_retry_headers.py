"""HTTP errors that a retry cannot fix carry x-should-retry: false; the ones it can fix do not."""

from __future__ import annotations

from tether.server.runner import RunningServer

from .wire import MODEL, http_client


async def test_invalid_requests_say_do_not_retry(server: RunningServer) -> None:
    async with http_client(server) as client:
        bad_json = await client.post("/responses", content=b"{", headers={"content-type": "application/json"})
        missing = await client.get("/responses/resp_unknown")
        no_parent = await client.post(
            "/responses", json={"model": MODEL, "input": "hi", "previous_response_id": "resp_nope"}
        )
        ok = await client.post("/responses", json={"model": MODEL, "input": "hi"})
    for response in (bad_json, missing, no_parent):
        assert response.status_code in (400, 404)
        assert response.headers["x-should-retry"] == "false"
    assert ok.status_code == 200
    assert "x-should-retry" not in ok.headers
