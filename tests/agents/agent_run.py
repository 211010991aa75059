"""Run a real agent CLI (Claude Code's ``claude -p``, Codex's ``codex exec``) through ``tether edge`` →
``tether serve`` → an upstream, all on this loopback.

Meant to run inside a network namespace with only loopback (``unshare -n`` + ``ip link set lo up``), so nothing can
leave the machine. Writes one JSON object (``--out``): what the agent printed, what the upstream recorded, what the edge
captured from the agent, and the edge's counters. ``tests/edge/test_real_agents.py`` runs it and checks the result.

    python tests/agents/agent_run.py --agent claude|codex --upstream fake|scripted --workdir DIR --prompt TEXT \
        --out FILE

``--upstream fake`` is the agent's own API recording what it receives (``FakeAnthropic`` for Claude Code,
``FakeResponsesUpstream`` over WebSocket for Codex), ``scripted`` the gateway's embedded defaults; there a
``--script`` is installed as the scripted model's script ``task`` (the agent asks for the model ``script:task``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from tether.edge.app import EdgeConfig
from tether.edge.link import LinkOptions
from tether.edge.run import edge_in_thread, link_url
from tether.netutil import free_port
from tether.providers.fakes import FakeAnthropic, FakeResponsesUpstream
from tether.server.runner import serve_in_thread
from tether.settings import Settings

BIN = Path(__file__).parent / "node_modules" / ".bin"
FAKE_KEY = "sk-ant-tether-test-0000000000000000"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", choices=["claude", "codex"], default="claude")
    parser.add_argument("--upstream", choices=["fake", "scripted"], required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--allowed-tools", default="Bash")
    parser.add_argument("--script", default="[]", help="the model's script (JSON steps)")
    parser.add_argument("--model", default=None, help="the model the agent asks for")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, required=True, help="where the result JSON goes")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    script = json.loads(args.script)
    fake: FakeAnthropic | FakeResponsesUpstream | None = None
    overrides: dict[str, Any] = {"store_url": f"sqlite:///{args.workdir / 'tether.db'}", "log_level": "warning"}
    if args.upstream == "fake" and args.agent == "claude":
        fake = FakeAnthropic(script=script, api_key=FAKE_KEY)
    elif args.upstream == "fake":
        fake = FakeResponsesUpstream(script=script, api_key=FAKE_KEY)
    elif script:
        scripts = args.workdir / "scripts.json"
        scripts.write_text(json.dumps({"scripts": {"task": script}}))
        overrides["scripted"] = {"scripts_file": str(scripts)}
        args.model = args.model or "script:task"
    with fake or _Nothing():
        if isinstance(fake, FakeAnthropic):
            overrides["providers"] = {"claude": {"kind": "anthropic", "base_url": fake.base_url}}
            overrides["routes"] = [{"model": "*", "provider": "claude"}]
        elif fake is not None:  # no key configured: tether's engine calls the upstream with the agent's own key
            upstream = {"kind": "openai-responses", "base_url": fake.base_url, "transport": "websocket"}
            overrides["providers"] = {"up": upstream}
            overrides["routes"] = [{"model": "*", "provider": "up"}]
        with serve_in_thread(Settings.model_validate(overrides)) as gateway:
            ws_url, origin = link_url(gateway.base_url)
            config = EdgeConfig(LinkOptions(ws_url), origin, journal=str(args.workdir / "edge.db"), capture=True)
            with edge_in_thread(config, port=free_port()) as edge:
                home = args.workdir / "home"
                home.mkdir(exist_ok=True)
                project = args.workdir / "project"
                project.mkdir(exist_ok=True)
                command, env = _command(args, edge.base_url, home)
                try:
                    ran = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                                         timeout=args.timeout, check=False)  # fmt: skip
                    result.update(returncode=ran.returncode, stdout=ran.stdout[-20000:], stderr=ran.stderr[-5000:])
                except subprocess.TimeoutExpired:
                    result.update(returncode=None, stdout="", stderr=f"{args.agent} did not finish in {args.timeout} s")
                result["status"] = httpx.get(edge.base_url + "/tether/edge/status").json()
                result["captured"] = httpx.get(edge.base_url + "/tether/edge/captured").json()
        if isinstance(fake, FakeAnthropic):
            result["upstream"] = [
                {"path": r.path, "body": orjson.loads(r.raw) if r.raw else None, "headers": _safe(r.headers)}
                for r in fake.requests
            ]
        elif fake is not None:
            result["upstream"] = [
                {"transport": r.transport, "connection": r.connection, "body": r.body, "headers": _safe(r.headers)}
                for r in fake.requests
            ]
    args.out.write_text(json.dumps(result))
    return 0


def _command(args: argparse.Namespace, edge_url: str, home: Path) -> tuple[list[str], dict[str, str]]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    if args.agent == "claude":
        env.update({
            "ANTHROPIC_BASE_URL": edge_url, "ANTHROPIC_API_KEY": FAKE_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
        })  # fmt: skip
        command = [str(BIN / "claude"), "-p", args.prompt, "--tools", args.allowed_tools,
                   "--allowedTools", args.allowed_tools, "--output-format", "json"]  # fmt: skip
        if args.model:
            command += ["--model", args.model]
        return command, env
    codex_home = home / ".codex"
    codex_home.mkdir(exist_ok=True)
    env.update({"CODEX_HOME": str(codex_home), "TETHER_AGENT_KEY": FAKE_KEY})
    provider = (f'model_providers.tether={{name="tether", base_url="{edge_url}/v1", wire_api="responses", '
                'env_key="TETHER_AGENT_KEY", supports_websockets=true}')  # fmt: skip
    command = [str(BIN / "codex"), "exec", "--skip-git-repo-check", "--json", "-c", 'model_provider="tether"',
               "-c", provider, "-m", args.model or "gpt-test", "--sandbox", "read-only", args.prompt]  # fmt: skip
    return command, env


def _safe(headers: dict[str, str]) -> dict[str, str]:
    return {k: ("<set>" if k in ("x-api-key", "authorization") else v) for k, v in headers.items()}


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
