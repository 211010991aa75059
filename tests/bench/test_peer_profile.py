"""The peer benchmark's profile summary: self time charged once, to the innermost component; inclusive separately."""

from pathlib import Path

from tether.bench import peer_profile

SERVER = "WebSocket and HTTP server (uvicorn, starlette, websockets, tether's adapters)"
CLIENT = "upstream HTTP client (httpx2, httpcore2, anyio, h11 as client)"
STORE = "store (SQLite, its worker thread)"


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "profile.raw"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_self_time_goes_to_the_innermost_component_and_adds_up(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            "run (uvicorn/server.py:1);turn (tether/engine/turn.py:5);put (tether/store/sqlite.py:9) 3",
            "run (uvicorn/server.py:1);post (httpcore2/http11.py:2);validate (h11/_util.py:87) 2",
            "run (uvicorn/server.py:1);post (httpcore2/http11.py:2);validate (h11/_util.py:92) 1",
            "run (uvicorn/server.py:2) 4",
        ],
    )
    profile = peer_profile.summarise(path)
    assert profile is not None
    assert profile.samples == 10
    # h11 has no component of its own: its samples count for the HTTP client that called it
    assert profile.self_by_component == {SERVER: 4, STORE: 3, CLIENT: 3}
    assert sum(profile.self_by_component.values()) == profile.samples
    # the server is on every stack: inclusive says so, self does not
    assert profile.inclusive_by_component[SERVER] == 10
    assert profile.inclusive_by_component[STORE] == 3
    # a function's lines are one entry
    assert profile.top_self[0] == ("run (uvicorn/server.py)", 4)
    assert ("validate (h11/_util.py)", 3) in profile.top_self


def test_the_event_loop_has_self_time_but_no_inclusive_share(tmp_path: Path) -> None:
    loop = "Runner.run (asyncio/runners.py:118)"
    path = write(tmp_path, [f"{loop} 5", f"{loop};x (a.py:1) 5"])
    profile = peer_profile.summarise(path)
    assert profile is not None
    assert profile.self_by_component == {peer_profile.EVENT_LOOP: 10}
    assert peer_profile.EVENT_LOOP not in profile.inclusive_by_component


def test_no_samples_is_no_profile(tmp_path: Path) -> None:
    assert peer_profile.summarise(tmp_path / "absent.raw") is None
    assert peer_profile.summarise(write(tmp_path, ["garbage"])) is None
