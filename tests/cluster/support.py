"""A real cluster for tests: ``tether serve`` processes on one PostgreSQL or Redis, behind a real nginx.

nginx (the Debian package) balances round robin with no stickiness, upgrades WebSockets, and passes a request that
found its node dead to the next node. Nodes can be SIGKILLed and started again on their port. What the nodes did is
read back from the shared store (which node ran each turn, how each turn ended).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
import orjson
import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from store.backends import POSTGRES_URL, REDIS_URL, postgres_unreachable, redis_unreachable, unique_name
from tether.netutil import free_port

TENANT = "default"  # open access: every request is the default tenant's
LEASE_S = 2.0
STARTUP_TIMEOUT_S = 60.0
TURNS = 20
LOOKUP_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "lookup",
    "description": "Look up one fact by its step number.",
    "parameters": {"type": "object", "properties": {"step": {"type": "integer"}}, "required": ["step"]},
}
FINAL_TEXT = "Cluster loop done: every lookup was answered, whichever node ran it."


def step_text(step: int) -> str:
    return f"Step {step} of the cluster loop: looking up fact number {step} before the next turn goes out."


def loop_script() -> dict[str, Any]:
    """``script:cluster_loop``: 19 turns of text + one tool call, then a final answer (20 turns in all)."""
    steps: list[dict[str, Any]] = [
        {"text": step_text(step), "tool_calls": [{"name": "lookup", "arguments": {"step": step}}]}
        for step in range(1, TURNS)
    ]
    return {"scripts": {"cluster_loop": [*steps, {"text": FINAL_TEXT}]}}


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_unavailable() -> str | None:
    if os.access(NGINX, os.X_OK):
        return None
    return "nginx is not installed (.ci/run installs it: apt-get install nginx)"


@dataclass
class Node:
    """One ``tether serve`` process on a fixed port (so it can be killed and started again behind nginx)."""

    name: str
    port: int
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.workdir / f"{self.name}-{self.starts}.log").open("wb")
        with log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.workdir,
                env={**os.environ, **self.env, "TETHER_NODE_NAME": self.name},
                stdout=log,
                stderr=log,
            )
        wait_ready(f"http://127.0.0.1:{self.port}/health/ready", self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no drain, no goodbye to the store."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return (self.workdir / f"{self.name}-{self.starts}.log").read_text(errors="replace")

    def counters(self, *names: str) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
        """The samples of these counters on the node's ``/metrics``, by name and labels (none while it is down or
        still starting: a process that has not served yet has counted nothing)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10.0).text
        except httpx.ConnectError:
            return Counter()
        found: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names:
                    found[(sample.name, tuple(sorted(sample.labels.items())))] += int(sample.value)
        return found


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}:\n{log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} was not ready within {STARTUP_TIMEOUT_S}s:\n{log()}")


NGINX_CONF = """
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream tether {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 32m;
        location / {{
            proxy_pass http://tether;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def nginx_config(prefix: Path, port: int, node_ports: list[int]) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;" for p in node_ports)
    user = "user root;" if os.geteuid() == 0 else ""
    return NGINX_CONF.format(user=user, prefix=prefix, port=port, servers=servers)


@dataclass
class Cluster:
    kind: str  # "postgres" or "redis"
    store_url: str
    nodes: list[Node]
    port: int
    nginx: subprocess.Popen[bytes]
    name: str = field(default="")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def turns(self) -> list[dict[str, Any]]:
        """Every turn the nodes claimed: response id, node, state and idempotency key."""
        if self.kind == "postgres":
            with psycopg.connect(POSTGRES_URL) as conn:
                query = sql.SQL("SELECT response_id, node, state, idempotency_key FROM {}.turns").format(
                    sql.Identifier(self.name)
                )
                rows = conn.execute(query).fetchall()
            return [{"id": r[0], "node": r[1], "state": r[2], "key": r[3]} for r in rows]
        client = redis.Redis.from_url(REDIS_URL)
        try:
            turns = []
            for key in client.scan_iter(match=f"{self.name}:turn:*", count=1000):
                raw = cast(dict[bytes, bytes], client.hgetall(key))
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                response_id = cast(bytes, key).decode().removeprefix(f"{self.name}:turn:")
                turns.append(
                    {"id": response_id, "node": fields["node"], "state": fields["state"], "key": fields["key"]}
                )
            return turns
        finally:
            client.close()

    def node_of(self, response_id: str) -> str:
        return str(next(turn["node"] for turn in self.turns() if turn["id"] == response_id))


def store_unreachable(kind: str) -> str | None:
    return postgres_unreachable() if kind == "postgres" else redis_unreachable()


@contextlib.contextmanager
def running_cluster(kind: str, workdir: Path, settings: dict[str, str], size: int = 3) -> Iterator[Cluster]:
    """``size`` nodes on a fresh schema (PostgreSQL) or key prefix (Redis), behind nginx; removed afterwards."""
    name = unique_name(kind)
    store_url = f"{POSTGRES_URL}?schema={name}" if kind == "postgres" else f"{REDIS_URL}?prefix={name}:"
    scripts = workdir / "scripts.json"
    scripts.write_bytes(orjson.dumps(loop_script()))
    env = {
        "TETHER_STORE_URL": store_url,
        "TETHER_LEASE_S": str(LEASE_S),
        "TETHER_LOG_LEVEL": "warning",
        "TETHER_SCRIPTED__SCRIPTS_FILE": str(scripts),
        "TETHER_SHUTDOWN_GRACE_S": "2",
        **settings,
    }
    nodes = [Node(f"node-{index}", free_port(), env, workdir) for index in range(size)]
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    (prefix / "nginx.conf").write_text(nginx_config(prefix, port, [node.port for node in nodes]))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        nodes[0].start()  # the first migrates the schema; the others find it done
        for node in nodes[1:]:
            node.start()
        with (prefix / "stderr.log").open("wb") as stderr:
            nginx = subprocess.Popen(
                [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        wait_ready(f"http://127.0.0.1:{port}/health", nginx, lambda: (prefix / "stderr.log").read_text())
        yield Cluster(kind, store_url, nodes, port, nginx, name)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(30)
        for node in nodes:
            node.stop()
        _drop(kind, name)


def _drop(kind: str, name: str) -> None:
    if kind == "postgres":
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
