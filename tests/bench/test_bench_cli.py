"""``tether bench`` as a user meets it: a misspelt task is one line, the charts are distinguishable and announced."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from tether.bench.arms import ARMS, TurnMetrics
from tether.bench.cli import bench_console, main, write_report
from tether.bench.harness import Run
from tether.bench.report import arm_styles


def test_a_misspelt_task_is_one_line_with_the_closest_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tasks", "refactr", "--out", "unused"]) == 2
    out = capsys.readouterr().out
    assert "unknown task 'refactr'" in out
    assert "did you mean 'refactor'?" in out
    assert "Traceback" not in out


def test_every_arm_has_one_style_in_every_chart() -> None:
    styles = arm_styles(list(ARMS))
    assert len({style.color for style in styles.values()}) == len(ARMS)
    assert len({(style.marker, style.linestyle) for style in styles.values()}) == len(ARMS)
    # The same arm keeps its colour whichever other arms a run has.
    assert arm_styles(["ws", "stateless-http"])["ws"] != arm_styles(list(ARMS))["stateless-http"]
    assert arm_styles(["stateless-http", "ws"]) == arm_styles(["ws", "stateless-http"])


def fake_run(arm: str, up_per_turn: int) -> Run:
    turns = [TurnMetrics(turn=t, app_bytes_up=up_per_turn * (t + 1), ttft_s=0.01, turn_s=0.1) for t in range(3)]
    return Run("loopback", arm, "refactor", 0, True, 1.0, 600, 700, 800, 600, 800, 1, turns, ["a"] * 3)


def test_the_report_says_where_its_charts_went(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    runs = [fake_run("stateless-http", 100), fake_run("ws", 10), fake_run("ws-deflate", 10)]
    write_report_meta = {"date": "today", "command": "tether bench"}
    assert write_report(Console(), tmp_path, write_report_meta, runs) == []
    out = capsys.readouterr().out
    for name in ("upload-per-turn.png", "task-time-per-profile.png"):
        assert (tmp_path / name).exists()
        assert f"chart: {tmp_path / name}" in out


def test_the_table_fits_the_terminal_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert bench_console().width == 100


@pytest.mark.parametrize(
    "argv",
    [["--repeats", "0"], ["--repeats", "-1"], ["--repeats", "x"], ["--long-session", "1"], ["--long-session", "-5"]],
)
def test_a_count_out_of_range_is_a_usage_error_before_anything_runs(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--repeats 0 ran the full matrix (0 read as 'not given'), -1 ran and failed drawing its charts, and a long
    session of 1 turn failed building its task: each with a traceback, after the run."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--out", "unused"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}:" in err
    assert "Traceback" not in err


def test_no_task_at_all_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tasks", "none", "--out", "unused"]) == 2
    assert "--tasks none needs --long-session" in capsys.readouterr().out
