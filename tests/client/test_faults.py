"""Fault injection: a 20-turn tool loop through the shaping proxy, cut at more than 200 seeded points.

Every trial runs the same agent loop (19 tool rounds, some with two parallel calls, then a long final answer)
through a ``ShapingProxy`` that cuts the connection (RST, blackhole, half-close) after a seeded number of bytes in
either direction: in handshakes, in the middle of uploads (requests carry 1-4 KB tool outputs), before a response's
first event, in the middle of streamed responses, after their last delta; some cuts are followed by a second one in
the recovery (the reconnect, the resume, the re-sent create). In every trial:

* the caller sees exactly the fault-free transcript: every delta once, in order, in every turn;
* the journal holds the fault-free conversation;
* the server ran exactly one generation per turn (``engine.stats.generations``): nothing was generated twice.

Trials run over WebSocket, HTTP SSE and ``auto`` (which here falls back to HTTP at every WebSocket drop and goes
back soon after, so responses are resumed on the other transport), and a few with ``store=False`` (heals). A failing
trial is named by its seed, and its cuts are reproducible (``plan_cuts``): ``pytest tests/client/test_faults.py -k
seed-6-websocket`` runs one again; a failure lists the trial's cut points.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import orjson
import pytest

from tether.client import (
    AsyncSession,
    BackToWebSocket,
    ClientStats,
    ConnectionEvent,
    ConnectionPolicy,
    Disconnected,
    FallbackToHTTP,
    FunctionCall,
    Healed,
    Offline,
    ReasoningDelta,
    Resumed,
    Retrying,
    RetryPolicy,
    TextDelta,
    TurnReset,
)
from tether.client.session import Input
from tether.netem import AtBytes, Direction, Fault, FaultMode, FaultSchedule, ShapingProxy
from tether.server.runner import RunningServer, serve_in_thread
from tether.settings import ScriptedSettings, Settings
from tether.types import Item, JSONObject

from .support import Recorder, proxy_url, session_summaries, settled_generations

TURNS = 20
TRIAL_TIMEOUT_S = 90.0
TransportMode = Literal["auto", "websocket", "http"]

# Retries come fast: after an RST or a half-close, the backoff floor is most of what a cut costs.
RETRY = RetryPolicy(initial_delay_s=0.02, multiplier=2.0, max_delay_s=0.1, max_attempts=30, max_elapsed_s=20.0)
READ_TIMEOUT_S = 0.5
# A blackhole is noticed by the read timeout. It ends (the proxy resets what it held) a little later, so that the
# timeout is what notices it and no reconnect waits for a handshake timeout (a WebSocket handshake that times out
# is a refusal: with transport="websocket" the turn would fail, by design).
BLACKHOLE_S = READ_TIMEOUT_S + 0.25
CONNECTION = ConnectionPolicy(connect_timeout_s=3.0, read_timeout_s=READ_TIMEOUT_S)
# auto: every WebSocket drop falls back to HTTP, and WebSocket is tried again 0.1 s later, so a trial moves between
# the transports (and resumes responses on the other one).
AUTO_CONNECTION = ConnectionPolicy(
    connect_timeout_s=3.0, read_timeout_s=READ_TIMEOUT_S, websocket_drop_limit=1, websocket_retry_after_s=0.1
)

READ_FILE: JSONObject = {
    "type": "function",
    "name": "read_file",
    "description": "Read a part of a file of the project.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "part": {"type": "integer"}},
        "required": ["path", "part"],
    },
}
FIRST_MESSAGE = "Read the project file by file, then summarise what it does."
_VOCABULARY = (
    "engine stream lane cursor journal resume token socket buffer commit snapshot replay delta chain context session "
    "proxy backoff jitter heal fallback upload event sequence response request gateway turn tool"
)
_WORDS = _VOCABULARY.split()


def _prose(seed: str, chars: int) -> str:
    rng = random.Random(seed)
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < chars:
        words.append(rng.choice(_WORDS))
    return " ".join(words)[:chars].rstrip() + "."


FINAL_TEXT = "Summary: " + _prose("final", 620)


def script_steps() -> list[JSONObject]:
    """19 tool rounds (every fourth with two parallel calls, every third with commentary), then the final answer."""
    steps: list[JSONObject] = []
    for step in range(TURNS - 1):
        calls = [
            {"name": "read_file", "arguments": {"path": f"src/pkg{step % 5}/module_{step:02d}.py", "part": part}}
            for part in range(2 if step % 4 == 1 else 1)
        ]
        entry: JSONObject = {"tool_calls": calls}
        if step % 3 == 0:
            entry["text"] = f"Step {step}: " + _prose(f"commentary-{step}", 90)
        steps.append(entry)
    steps.append({"text": FINAL_TEXT})
    return steps


def tool_output(name: str, arguments: str) -> str:
    """The tool's deterministic answer to a call: 1-4 KB of text that compresses poorly (WebSocket messages are
    deflated), so that each request is a long upload."""
    digest = hashlib.blake2b(f"{name}:{arguments}".encode(), digest_size=8).hexdigest()
    rng = random.Random(digest)
    size = 1024 + int(digest, 16) % 3072
    lines = [f"# {name} {arguments}"]
    while sum(len(line) + 1 for line in lines) < size:
        lines.append(f"{rng.choice(_WORDS)} = {base64.b64encode(rng.randbytes(24)).decode()!r}")
    return "\n".join(lines)[:size]


# -- one run of the loop ---------------------------------------------------------------------------------------

Piece = tuple[str, ...]  # ("text", text) | ("call", name, arguments) | ("reasoning", text) | ("reset", reason)


@dataclass
class TurnTraffic:
    """One turn: bytes through the proxy, and what a drop during it interrupted.

    Attributes:
        up: client → server bytes.
        down: server → client bytes.
        deltas: deltas delivered to the caller.
        deltas_down: down bytes forwarded by the time the first and the last delta reached the caller.
        before_drop: deltas delivered before the turn's first drop, ``None`` without a drop.
        resumed: whether the response was resumed after a sequence number (the drop came after ``response.created``).
    """

    up: int = 0
    down: int = 0
    deltas: int = 0
    deltas_down: tuple[int, int] = (0, 0)
    before_drop: int | None = None
    resumed: bool = False

    @property
    def effect(self) -> str:
        """Where the turn's first drop fell, as the caller saw it."""
        if self.before_drop is None:
            return "no drop in this turn"
        if self.before_drop == 0:
            return "before the first delta"
        if self.before_drop < self.deltas:
            return "mid-stream (deltas before and after)"
        return "after the last delta"


@dataclass
class Run:
    """What one run of the loop delivered to the caller, journaled, and cost."""

    turns: list[list[Piece]] = field(default_factory=list)
    final_text: str = ""
    context: list[tuple[str, ...]] = field(default_factory=list)
    traffic: list[TurnTraffic] = field(default_factory=list)
    stats: ClientStats = field(default_factory=ClientStats)
    recorder: Recorder = field(default_factory=Recorder)


@dataclass(frozen=True)
class Cut:
    """A planned cut: during ``turn``, after ``offset`` bytes in ``direction`` counted from the turn's start.

    ``again``: a second cut ``again[0]`` bytes further in the same direction, with mode ``again[1]``: it lands in
    the recovery from the first (the reconnect's handshake, the resume request or the re-sent create, the resumed
    events).
    """

    turn: int
    direction: Direction
    offset: int
    mode: FaultMode
    again: tuple[int, FaultMode] | None = None

    @property
    def points(self) -> int:
        """Cut points: 1, or 2 with a second cut."""
        return 1 if self.again is None else 2

    def faults(self) -> FaultSchedule:
        cuts = [(self.offset, self.mode)]
        if self.again is not None:
            cuts.append((self.offset + self.again[0], self.again[1]))
        return FaultSchedule(
            tuple(
                Fault(AtBytes(self.direction, offset), mode, restore_after_s=_restore_after(mode))
                for offset, mode in cuts
            )
        )

    def __str__(self) -> str:
        again = "" if self.again is None else f", then {self.again[0]} B later {self.again[1]}"
        return f"turn {self.turn}, {self.direction} {self.offset} B, {self.mode}{again}"


def _restore_after(mode: FaultMode) -> float | None:
    return BLACKHOLE_S if mode is FaultMode.BLACKHOLE else None


class CutPlan:
    """Arms each planned cut at the start of its turn; a cut has fired once its direction forwarded its bytes."""

    def __init__(self, proxy: ShapingProxy, cuts: list[Cut]) -> None:
        self.proxy = proxy
        self.waiting = list(cuts)
        self.armed: dict[Cut, int] = {}  # each armed cut, with its direction's byte count when it was armed
        self.fired: dict[Cut, int] = {}  # each fired cut, with the turn it fired in (its last cut, with ``again``)

    def at_turn(self, turn: int) -> None:
        """Note the cuts that fired (during ``turn - 1``); arm the cuts of ``turn``."""
        for cut, base in list(self.armed.items()):
            if self._forwarded(cut) >= base + cut.offset + (cut.again[0] if cut.again is not None else 0):
                self.fired[cut] = turn - 1
                del self.armed[cut]
        for cut in [cut for cut in self.waiting if cut.turn <= turn]:
            self.waiting.remove(cut)
            self.armed[cut] = self._forwarded(cut)
            self.proxy.schedule(cut.faults())

    def _forwarded(self, cut: Cut) -> int:
        return self.proxy.stats.direction(cut.direction).bytes

    def describe(self) -> str:
        lines = [f"  {cut}: fired in turn {turn}" for cut, turn in self.fired.items()]
        lines += [
            f"  {cut}: armed, {self._forwarded(cut) - base} B forwarded since" for cut, base in self.armed.items()
        ]
        lines += [f"  {cut}: not armed" for cut in self.waiting]
        return "\n".join(lines)


def _shape(item: Item) -> tuple[str, ...]:
    """An item without its ids: what must be equal between two runs."""
    kind = str(item.get("type", "message"))
    if kind == "message":
        content = item.get("content")
        text = (
            content
            if isinstance(content, str)
            else "".join(str(part.get("text", "")) for part in content or [] if isinstance(part, dict))
        )
        return (kind, str(item.get("role")), text)
    if kind == "function_call":
        return (kind, str(item.get("name")), str(item.get("arguments")))
    if kind == "function_call_output":
        return (kind, str(item.get("output")))
    return (kind,)


def _dropped(events: list[ConnectionEvent]) -> bool:
    return any(isinstance(event, Disconnected | Offline | Retrying) for event in events)


def _check_call_links(context: list[Item]) -> None:
    """Every function_call_output answers a function_call made before it."""
    calls: set[str] = set()
    for item in context:
        if item.get("type") == "function_call":
            calls.add(str(item.get("call_id")))
        elif item.get("type") == "function_call_output":
            assert item.get("call_id") in calls, item


async def run_loop(
    proxy: ShapingProxy, *, transport: TransportMode, store: bool, seed: int, plan: CutPlan | None = None
) -> Run:
    """Run the tool loop through ``proxy``: every delta the caller gets is recorded, every call answered."""
    run = Run()
    async with AsyncSession(
        proxy_url(proxy),
        model="script:loop",
        tools=[READ_FILE],
        store=store,
        session_id=f"trial-{seed}",
        transport=transport,
        retry=RETRY,
        connection=AUTO_CONNECTION if transport == "auto" else CONNECTION,
        seed=seed,
        on_event=run.recorder.on_event,
    ) as session:
        items: Input = FIRST_MESSAGE
        for turn in range(TURNS + 1):
            if plan is not None:
                plan.at_turn(turn)
            assert turn < TURNS, f"the loop did not end after {TURNS} turns"
            up, down = proxy.stats.up.bytes, proxy.stats.down.bytes
            events = len(run.recorder.events)
            traffic = TurnTraffic()
            pieces: list[Piece] = []
            calls: list[FunctionCall] = []
            last_sequence = -1
            stream = session.stream(items)
            async with stream:
                async for delta in stream:
                    if traffic.before_drop is None and _dropped(run.recorder.events[events:]):
                        traffic.before_drop = len(pieces)
                    now = proxy.stats.down.bytes - down
                    traffic.deltas_down = (traffic.deltas_down[0] if pieces else now, now)
                    if isinstance(delta, TextDelta):
                        pieces.append(("text", delta.text))
                        assert delta.sequence_number > last_sequence, f"turn {turn}: a text delta out of order"
                        last_sequence = delta.sequence_number
                    elif isinstance(delta, FunctionCall):
                        pieces.append(("call", delta.name, delta.arguments))
                        calls.append(delta)
                    elif isinstance(delta, ReasoningDelta):
                        pieces.append(("reasoning", delta.text))
                    else:
                        assert isinstance(delta, TurnReset)
                        pieces.append(("reset", delta.reason))
            traffic.up, traffic.down = proxy.stats.up.bytes - up, proxy.stats.down.bytes - down
            traffic.deltas = len(pieces)
            if traffic.before_drop is None and _dropped(run.recorder.events[events:]):
                traffic.before_drop = len(pieces)
            traffic.resumed = any(isinstance(event, Resumed) for event in run.recorder.events[events:])
            run.turns.append(pieces)
            run.traffic.append(traffic)
            result = stream.result
            assert [call.call_id for call in calls] == [call.call_id for call in result.function_calls]
            if not calls:
                run.final_text = result.text
                break
            items = [call.output(tool_output(call.name, call.arguments)) for call in calls]
        context = await session.context()
        _check_call_links(context)
        run.context = [_shape(item) for item in context]
        run.stats = session.stats
    return run


# -- the server, the fault-free runs, the plan -----------------------------------------------------------------


@pytest.fixture(scope="module")
def loop_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for every trial: SQLite store, the loop's script, answers streamed in 4-16 character deltas."""
    directory = tmp_path_factory.mktemp("faults")
    scripts = directory / "scripts.json"
    scripts.write_bytes(orjson.dumps({"scripts": {"loop": script_steps()}}))
    settings = Settings(
        store_url=f"sqlite:///{directory / 'tether.db'}",
        log_level="warning",
        scripted=ScriptedSettings(ttft_s=0.0, tokens_per_second=2000.0, scripts_file=scripts),
    )
    with serve_in_thread(settings) as running:
        yield running


@dataclass(frozen=True)
class Baseline:
    run: Run
    generations: int


@pytest.fixture(scope="module")
def baselines(loop_server: RunningServer) -> dict[str, Baseline]:
    """The fault-free run over each transport (auto runs as WebSocket): its transcript and its traffic per turn."""

    server = loop_server

    async def measure() -> dict[str, Baseline]:
        runs: dict[str, Baseline] = {}
        for transport in ("websocket", "http"):
            before = await settled_generations(server)
            async with asyncio.timeout(TRIAL_TIMEOUT_S), ShapingProxy(server.host, server.port, "loopback") as proxy:
                run = await run_loop(proxy, transport=transport, store=True, seed=0)
            runs[transport] = Baseline(run, await settled_generations(server) - before)
        return runs

    return asyncio.run(measure())


AIM_MID_STREAM = 0.8  # of the down cuts in a turn with several deltas: aimed between its first and last delta
AGAIN = 0.3  # of the cuts: cut again during the recovery
AGAIN_MAX_BYTES = 400


def plan_cuts(seed: int, count: int, baseline: Run) -> list[Cut]:
    """``count`` cuts in distinct turns: the seed draws each cut's turn, direction, mode and relative position.

    Turns that stream more deltas are drawn more often (weight: 4 + the turn's deltas), so the commentaries and the
    long final answer take many cuts. The position is a fraction of the turn's fault-free bytes in the direction, so
    a cut lands anywhere in the turn: in a handshake, mid-upload, before the first event, mid-stream, after the last
    event; most down cuts in a turn with several deltas aim between its first and last delta. Some cuts (``AGAIN``)
    come with a second one, up to ``AGAIN_MAX_BYTES`` further, in the recovery from the first.

    The byte offset is that fraction of the traffic measured at run time, which varies by a few bytes between runs
    (deflate, ids); the turn, direction, modes and relative position do not. The last turn's cuts stay within its
    first 90 %, so that each fires while the loop runs (a faulty run's traffic differs a little from a clean one).
    """
    rng = random.Random(seed)
    weights = {turn: 4 + len(pieces) for turn, pieces in enumerate(baseline.turns)}
    cuts: list[Cut] = []
    while len(cuts) < count:
        [turn] = rng.choices(list(weights), list(weights.values()))
        del weights[turn]
        direction = rng.choice([Direction.UP, Direction.DOWN])
        mode = rng.choice(list(FaultMode))
        fraction, aim = rng.random(), rng.random()
        again = (rng.randint(1, AGAIN_MAX_BYTES), rng.choice(list(FaultMode)))
        cut_again = rng.random() < AGAIN and turn < TURNS - 1  # no turn follows the last one's recovery
        traffic = baseline.traffic[turn]
        size = traffic.up if direction is Direction.UP else traffic.down
        if direction is Direction.DOWN and traffic.deltas > 2 and aim < AIM_MID_STREAM:
            first, last = traffic.deltas_down
            fraction = (first + fraction * (last - first)) / size
        if turn == TURNS - 1:
            fraction *= 0.9
        cuts.append(Cut(turn, direction, 1 + int(fraction * size), mode, again if cut_again else None))
    return sorted(cuts, key=lambda cut: cut.turn)


@dataclass(frozen=True)
class Trial:
    seed: int
    transport: TransportMode
    store: bool = True
    cuts: int = 8

    @property
    def id(self) -> str:
        return f"seed-{self.seed}-{self.transport}{'' if self.store else '-store-false'}"


TRIALS = (
    [Trial(seed, "websocket") for seed in range(1, 19)]
    + [Trial(seed, "http") for seed in range(101, 107)]
    + [Trial(seed, "auto") for seed in range(201, 207)]
)
STORE_FALSE_TRIALS = [Trial(seed, "websocket", store=False, cuts=6) for seed in range(301, 304)]


@dataclass
class TrialReport:
    trial: Trial
    cuts: list[Cut]
    stats: ClientStats
    effects: list[str]  # where each cut fell, as the caller saw it
    events: Counter[str]
    idempotent_replays: int
    elapsed_s: float


async def _trial(server: RunningServer, baseline: Run, trial: Trial) -> TrialReport:
    loop = asyncio.get_running_loop()
    started = loop.time()
    engine = server.engine.stats
    # Counted once the server is idle, before and after: a late duplicate of a turn shows in this trial's count.
    before = await settled_generations(server)
    replays = engine.idempotent_replays
    cuts = plan_cuts(trial.seed, trial.cuts, baseline)
    async with ShapingProxy(server.host, server.port, "loopback", seed=trial.seed) as proxy:
        plan = CutPlan(proxy, cuts)
        try:
            async with asyncio.timeout(TRIAL_TIMEOUT_S):
                run = await run_loop(proxy, transport=trial.transport, store=trial.store, seed=trial.seed, plan=plan)
            plan.at_turn(TURNS)  # the last turn's cut
        except BaseException as error:
            error.add_note(f"{trial.id}: cuts\n{plan.describe()}")
            raise
    where = f"{trial.id}: cuts\n{plan.describe()}"
    generations = await settled_generations(server, TRIAL_TIMEOUT_S) - before

    assert not plan.waiting, where
    assert not plan.armed, where
    assert set(plan.fired) == set(cuts), where
    # Exactly the fault-free transcript: every delta once, in order, in every turn; the same final answer.
    assert len(run.turns) == TURNS, where
    for number, (seen, expected) in enumerate(zip(run.turns, baseline.turns, strict=True)):
        assert seen == expected, f"turn {number}: the deltas differ from the fault-free run\n{where}"
        text = "".join(piece[1] for piece in seen if piece[0] == "text")
        assert text == "".join(piece[1] for piece in expected if piece[0] == "text"), where
    assert run.final_text == baseline.final_text == FINAL_TEXT, where
    assert not run.recorder.of(TurnReset), where
    # The journal holds the fault-free conversation.
    assert run.context == baseline.context, where
    # One generation per turn: nothing was generated twice.
    assert generations == TURNS, f"{generations} generations for {TURNS} turns\n{where}"
    assert run.stats.turns == TURNS, where
    assert run.stats.reconnects > 0, where
    if trial.store:
        assert run.stats.heals == 0, where  # a stored chain is never lost

    counted = (Resumed, Healed, FallbackToHTTP, BackToWebSocket)
    events = Counter(type(event).__name__ for event in run.recorder.events if isinstance(event, counted))
    effects = [_effect(run.traffic[turn]) for turn in plan.fired.values()]
    return TrialReport(
        trial, cuts, run.stats, effects, events, engine.idempotent_replays - replays, loop.time() - started
    )


def _effect(traffic: TurnTraffic) -> str:
    effect = traffic.effect
    if traffic.before_drop is None:
        return "after the turn (noticed by the next)"
    return f"{effect}, resumed" if traffic.resumed else effect


# -- the tests -------------------------------------------------------------------------------------------------


def test_the_plan_has_at_least_200_cut_points(baselines: dict[str, Baseline]) -> None:
    assert sum(trial.cuts for trial in TRIALS) >= 200  # without counting the second cuts
    baseline = baselines["websocket"].run
    points = sum(
        cut.points for trial in TRIALS + STORE_FALSE_TRIALS for cut in plan_cuts(trial.seed, trial.cuts, baseline)
    )
    assert points > sum(trial.cuts for trial in TRIALS + STORE_FALSE_TRIALS)
    assert {trial.transport for trial in TRIALS} == {"websocket", "http", "auto"}


@pytest.mark.timeout(120)
def test_the_fault_free_loop(baselines: dict[str, Baseline]) -> None:
    calls = sum(2 if step % 4 == 1 else 1 for step in range(TURNS - 1))
    commentaries = sum(1 for step in range(TURNS - 1) if step % 3 == 0)
    for transport, baseline in baselines.items():
        run = baseline.run
        assert len(run.turns) == TURNS, transport
        assert baseline.generations == TURNS
        assert run.final_text == FINAL_TEXT
        assert "".join(piece[1] for piece in run.turns[-1]) == FINAL_TEXT
        assert run.stats.turns == TURNS
        assert run.stats.reconnects == run.stats.resumes == run.stats.heals == run.stats.retries == 0
        assert sum(piece[0] == "call" for turn in run.turns for piece in turn) == calls
        # The user message, the calls and their outputs, the commentaries and the final answer.
        assert len(run.context) == 1 + 2 * calls + commentaries + 1
    websocket, http = baselines["websocket"].run, baselines["http"].run
    assert websocket.turns == http.turns
    assert websocket.context == http.context
    # Each request carries 1-4 KB of tool output (deflated on WebSocket); the final answer streams in many deltas.
    assert all(turn.up > 1024 for turn in http.traffic[1:])
    assert all(turn.up > 512 for turn in websocket.traffic[1:])
    assert len(websocket.turns[-1]) > 30


@pytest.fixture
def fault_report(pytestconfig: pytest.Config) -> FaultReport:
    """The session's fault-injection report: each passing trial adds to it, the terminal summary prints it."""
    report = session_summaries(pytestconfig).setdefault("fault injection", FaultReport())
    assert isinstance(report, FaultReport)
    return report


@pytest.mark.timeout(120)
@pytest.mark.parametrize("trial", TRIALS, ids=lambda trial: trial.id)
async def test_a_cut_loop_delivers_the_fault_free_transcript(
    loop_server: RunningServer, baselines: dict[str, Baseline], trial: Trial, fault_report: FaultReport
) -> None:
    baseline = baselines["http" if trial.transport == "http" else "websocket"].run
    fault_report.trials.append(await _trial(loop_server, baseline, trial))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("trial", STORE_FALSE_TRIALS, ids=lambda trial: trial.id)
async def test_a_cut_store_false_loop_heals_without_generating_twice(
    loop_server: RunningServer, baselines: dict[str, Baseline], trial: Trial, fault_report: FaultReport
) -> None:
    report = await _trial(loop_server, baselines["websocket"].run, trial)
    fault_report.trials.append(report)
    # The chain lived in the connection that was cut: the next turn re-sent the context from the journal.
    assert report.stats.heals > 0


@dataclass
class FaultReport:
    """Totals of the trials that passed in this session (printed in pytest's terminal summary)."""

    trials: list[TrialReport] = field(default_factory=list)

    def lines(self) -> list[str]:
        return _summary(self.trials) if self.trials else []


def _summary(done: list[TrialReport]) -> list[str]:
    cuts = [cut for report in done for cut in report.cuts]
    seconds = [cut.again for cut in cuts if cut.again is not None]
    lines = [
        f"fault injection: {len(done)} trials passed, {len(cuts) + len(seconds)} cut points fired: {len(cuts)} "
        f"planned cuts, {len(seconds)} of them cut again during the recovery "
        f"({dict(sorted(Counter(str(mode) for _, mode in seconds).items()))})"
    ]
    for name, counts in (
        ("mode", Counter(str(cut.mode) for cut in cuts)),
        ("direction", Counter(str(cut.direction) for cut in cuts)),
        ("mode/direction", Counter(f"{cut.mode}/{cut.direction}" for cut in cuts)),
        ("transport", Counter(_group(report.trial) for report in done for _ in report.cuts)),
        ("effect", Counter(effect for report in done for effect in report.effects)),
    ):
        lines.append(f"  cuts by {name}: {dict(sorted(counts.items()))}")
    for group in sorted({_group(report.trial) for report in done}):
        reports = [report for report in done if _group(report.trial) == group]
        totals = Counter[str]()
        for report in reports:
            for name in ("resumes", "reconnects", "heals", "fallbacks", "retries"):
                totals[name] += getattr(report.stats, name)
            totals["back to websocket"] += report.events["BackToWebSocket"]
            totals["idempotent replays (server)"] += report.idempotent_replays
        elapsed = sum(report.elapsed_s for report in reports)
        lines.append(f"  {group}: {len(reports)} trials, {elapsed:.1f} s, {dict(totals)}")
    lines.append(f"  time in trials: {sum(report.elapsed_s for report in done):.1f} s")
    return lines


def _group(trial: Trial) -> str:
    return trial.transport if trial.store else f"{trial.transport} store=false"
