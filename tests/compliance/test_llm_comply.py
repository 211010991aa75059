"""The Open Responses conformance suite, as packaged on PyPI (``llm-comply``), against a real ``tether serve``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tether.testing import ServeProcess

from .support import API_KEY

pytestmark = pytest.mark.compliance

LLM_COMPLY = Path(sys.executable).parent / "llm-comply"
# reasoning-summary runs only for reasoning model names (o1/o3/o4/gpt-5/deepseek-r); every other test takes any name.
MODEL = "gpt-5-mini"
# The open-responses tests of llm-comply 0.5.0 (`llm-comply list`); a missing one means it was skipped or renamed.
EXPECTED_TESTS = frozenset(
    {
        "basic-response",
        "system-prompt",
        "multi-turn",
        "tool-calling",
        "streaming-response",
        "streaming-usage",
        "image-input",
        "assistant-phase",
        "response-output-phase-schema",
        "compact-response",
        "compact-missing-model",
        "reasoning-summary",
        "error-handling",
    }
)


def describe(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        lines.append(f"{result['status']:>8} {result['id']} ({result.get('duration_ms', '?')} ms)")
        lines.extend(f"           error: {error}" for error in result.get("errors") or [])
        lines.extend(f"         warning: {warning}" for warning in result.get("warnings") or [])
    return "\n".join(lines)


def test_open_responses_conformance_suite_passes(tether_server: ServeProcess) -> None:
    command = [
        str(LLM_COMPLY),
        *("-u", tether_server.base_url),
        *("-k", API_KEY),
        *("-m", MODEL),
        *("--timeout", "20"),
        "--json",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    report = json.loads(run.stdout)
    summary, results = report["summary"], report["results"]
    details = f"{describe(results)}\nstderr:\n{run.stderr}"
    assert summary["failed"] == 0, details
    assert summary["skipped"] == 0, details
    assert summary["passed"] == summary["total"] - summary["skipped"], details
    assert {result["id"] for result in results} == EXPECTED_TESTS, details
    assert all(result["status"] == "passed" for result in results), details
    assert run.returncode == 0, details
