"""The suite's own fixtures: a leak fails the test that leaked, not whichever test runs when the collector does."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

LEAKING_TESTS = """
import socket


def test_leaks_a_socket_in_a_cycle():
    holder = {"socket": socket.socket()}
    holder["self"] = holder


def test_innocent():
    pass
"""


def test_a_socket_left_in_a_cycle_fails_the_teardown_of_the_test_that_left_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_leaks=LEAKING_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks_a_socket_in_a_cycle*"])
    result.stdout.no_fnmatch_line("*ERROR at *test_innocent*")
