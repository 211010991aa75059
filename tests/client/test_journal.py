"""Journal: turns written atomically, the context a heal needs, and survival across reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tether.client import Journal, TurnRecord


def user(text: str) -> dict[str, str]:
    return {"type": "message", "role": "user", "content": text}


def answer(text: str) -> dict[str, object]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


async def test_a_finished_turn_moves_the_head_and_joins_the_context(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "j.db") as journal:
        await journal.save_session("s", {"model": "m"})
        await journal.begin_turn("s", TurnRecord(1, "key-1", "pending", {"model": "m"}, [user("hi")]))
        assert (await journal.pending_turn("s")) is not None
        assert await journal.context("s") == [user("hi")]  # a pending turn's inputs are part of a heal
        await journal.note_response("s", 1, "resp_1", "tok")
        await journal.complete_turn("s", 1, "resp_1", "completed", [answer("hello")])
        session = await journal.load_session("s")
        assert session is not None
        assert session.last_response_id == "resp_1"
        assert await journal.pending_turn("s") is None
        assert await journal.context("s") == [user("hi"), answer("hello")]
        items = await journal.items("s")
        assert [(item.seq, item.role, item.response_id) for item in items] == [
            (0, "input", "resp_1"),
            (1, "output", "resp_1"),
        ]


async def test_failed_and_discarded_turns_leave_the_context(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "j.db") as journal:
        await journal.save_session("s", {"model": "m"})
        for number, status in ((1, "failed"), (2, "discarded")):
            await journal.begin_turn("s", TurnRecord(number, f"k{number}", "pending", {}, [user(str(number))]))
            await journal.end_turn("s", number, status, "why")  # type: ignore[arg-type]
        await journal.begin_turn("s", TurnRecord(3, "k3", "pending", {}, [user("3")]))
        assert await journal.context("s") == [user("3")]
        assert await journal.last_turn_number("s") == 3
        assert len(await journal.items("s")) == 3


async def test_a_pending_turn_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "j.db"
    async with await Journal.open(path) as journal:
        await journal.save_session("s", {"model": "m", "store": False})
        await journal.begin_turn("s", TurnRecord(1, "key-1", "pending", {"previous_response_id": None}, [user("a")]))
        await journal.note_response("s", 1, "resp_9", "token-9")
    async with await Journal.open(path) as journal:
        session = await journal.load_session("s")
        assert session is not None
        assert session.config == {"model": "m", "store": False}
        pending = await journal.pending_turn("s")
        assert pending == TurnRecord(
            1, "key-1", "pending", {"previous_response_id": None}, [user("a")], "resp_9", "token-9"
        )
        assert await journal.load_session("other") is None


async def test_sessions_are_kept_apart(tmp_path: Path) -> None:
    async with await Journal.open() as journal:  # in memory
        for name in ("a", "b"):
            await journal.save_session(name, {"model": name})
            await journal.begin_turn(name, TurnRecord(1, name, "pending", {}, [user(name)]))
        assert await journal.context("a") == [user("a")]
        assert await journal.context("b") == [user("b")]


async def test_a_turn_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "j.db") as journal:
        await journal.save_session("s", {"model": "m"})
        await journal.begin_turn("s", TurnRecord(1, "k", "pending", {}, [user("a")]))
        with pytest.raises(sqlite3.IntegrityError):  # turn 1 exists: nothing of this second attempt is kept
            await journal.begin_turn("s", TurnRecord(1, "k", "pending", {}, [user("b"), user("c")]))
        assert await journal.context("s") == [user("a")]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(RuntimeError, match="newer"):
        await Journal.open(path)


async def test_a_closed_journal_refuses_work(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    await journal.close()
    await journal.close()
    with pytest.raises(RuntimeError, match="closed"):
        await journal.context("s")
