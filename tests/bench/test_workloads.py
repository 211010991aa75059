from tether.bench.workloads import TOOLS, long_session, make_task, standard_tasks


def test_tasks_are_deterministic_for_a_seed() -> None:
    assert standard_tasks(3) == standard_tasks(3)
    assert standard_tasks(3) != standard_tasks(4)


def test_tasks_have_the_shapes_of_the_study() -> None:
    shapes = {
        "fix-failing-test": ((10, 15), (12, 17)),
        "add-feature": ((5, 15), (4, 21)),
        "refactor": ((6, 11), (10, 20)),
    }
    for seed in range(20):
        for task in standard_tasks(seed):
            (low_turns, high_turns), (low_calls, high_calls) = shapes[task.name.rsplit("-", 1)[0]]
            assert low_turns <= task.turns <= high_turns
            assert low_calls <= task.tool_calls <= max(high_calls, task.turns - 1)
            assert 8_000 <= len(task.instructions) <= 20_000
            assert 5 <= len(task.tools) <= len(TOOLS)
            assert {c.name for s in task.steps for c in s.calls} <= {t["name"] for t in task.tools}
            assert task.steps[-1].text
            assert not task.steps[-1].calls


def test_tool_outputs_are_realistic_sizes() -> None:
    task = make_task("fix-failing-test", 1)
    reads = [c.output for s in task.steps for c in s.calls if c.name == "read_file"]
    assert reads
    assert all(len(r) <= 30_000 for r in reads)
    assert any(len(r) >= 2_000 for r in reads)
    patches = [c.arguments["patch"] for s in task.steps for c in s.calls if c.name == "apply_patch"]
    assert all(p.startswith("--- a/") and "@@" in p for p in patches)


def test_long_session_has_the_requested_turns_and_a_script_per_step() -> None:
    task = long_session(2, turns=55)
    assert task.turns == 55
    script = task.script()
    assert len(script) == 55
    assert "text" in script[-1]
    assert "tool_calls" in script[0]
