"""The round loop on fakeredis, with workers simulated in a thread that runs `execute`."""

from __future__ import annotations

import csv
import io
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from rich.console import Console

from tests.faults.process_rig import PrunedRun
from tests.harness import study_toml
from tests.objectives import deterministic_score, learning_curve, prunable
from tests.test_store import RepliesLost
from zoomtune.common.errors import StoreError, StudyExists, StudyLocked, TrialRejected
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import Trial, TrialMessage, TrialStatus
from zoomtune.coordinator.export import StudyRecord, study_json, trials_csv
from zoomtune.coordinator.progress import LogProgress
from zoomtune.coordinator.report import Findings
from zoomtune.coordinator.rounds import LoopSettings, RoundLoop, round_rungs
from zoomtune.coordinator.search import CoarseToFine
from zoomtune.coordinator.views import status_view
from zoomtune.workers.execute import WorkerRuntime, execute
from zoomtune.workers.registry import ObjectiveRegistry

FAST = LoopSettings(tick=0.05, lock_ttl=5.0, idle_warning=60.0, outage_limit=5.0)
RESOURCES = 'heartbeat = "0.05s"\nlease = "0.3s"\nmax_attempts = 3'


class ThreadWorkers:
    """A dispatcher whose messages a background thread executes, in a shuffled order."""

    def __init__(
        self,
        server: fakeredis.FakeServer,
        objective: Callable[..., Any],
        order_seed: int = 0,
        drop: Callable[[TrialMessage], bool] | None = None,
    ) -> None:
        registry = ObjectiveRegistry(targets={"obj": "unused:obj"})
        registry._loaded["obj"] = objective
        client = fakeredis.FakeRedis(server=server, decode_responses=True)
        self.runtime = WorkerRuntime(
            Settings(broker_url="redis://unused"), registry, "thread", _client=client
        )
        self.sent: list[TrialMessage] = []
        self._queue: list[TrialMessage] = []
        self._lock = threading.Lock()
        self._random = random.Random(order_seed)
        self._drop = drop or (lambda message: False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def send(self, message: TrialMessage, queue: str, timeout: float) -> None:
        self.sent.append(message)
        if self._drop(message):
            return
        with self._lock:
            self._queue.append(message)

    def queue_length(self, queue: str) -> int:
        with self._lock:
            return len(self._queue)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch, self._queue = self._queue, []
            self._random.shuffle(batch)
            for message in batch:
                execute(message.to_dict(), self.runtime)
            time.sleep(0.01)

    def __enter__(self) -> ThreadWorkers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def spec_for(
    rounds: int = 3, trials: int = 5, seed: int = 11, speculate: bool = True, lag: int = 0
) -> StudySpec:
    return StudySpec.from_toml(
        study_toml(
            objective="obj",
            rounds=rounds,
            trials_per_round=trials,
            seed=seed,
            resources=RESOURCES,
            extra=f"speculate = {str(speculate).lower()}\nlag = {lag}",
        )
    )


class StragglerWorkers(ThreadWorkers):
    """Runs every message at once, except those of trial `straggler`: they wait until a message
    of a trial numbered `ahead_from` or later was sent (a round run ahead), then run. After
    `patience` seconds without one they run anyway, and `released_by_ahead` stays False.
    The queue looks empty to the coordinator only once every trial numbered below `ahead_from`
    but the straggler has finished: then only the straggler is left."""

    def __init__(
        self,
        server: fakeredis.FakeServer,
        objective: Callable[..., Any],
        straggler: int,
        ahead_from: int,
        patience: float = 10.0,
    ) -> None:
        super().__init__(server, objective)
        self.straggler = straggler
        self.ahead_from = ahead_from
        self.deadline = time.monotonic() + patience
        self.released_by_ahead = False
        self._held: list[TrialMessage] = []
        self._study = store_on(server)

    def queue_length(self, queue: str) -> int:
        others = [
            t
            for t in self._study.trials(range(self.ahead_from))
            if t.number != self.straggler and not t.status.is_finished()
        ]
        with self._lock:
            return len(self._queue) + len(others)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch, self._queue = self._queue, []
                ahead = any(m.trial >= self.ahead_from for m in self.sent)
                self.released_by_ahead |= ahead and bool(self._held)
                self._held += [m for m in batch if m.trial == self.straggler]
                batch = [m for m in batch if m.trial != self.straggler]
                if ahead or time.monotonic() > self.deadline:
                    batch, self._held = batch + self._held, []
            for message in batch:
                execute(message.to_dict(), self.runtime)
            time.sleep(0.01)


class SignalWhenSent(ThreadWorkers):
    """ThreadWorkers that set `signal` once a message of a trial numbered `first` or later is
    sent (a round run ahead, for an objective that waits on it)."""

    def __init__(
        self,
        server: fakeredis.FakeServer,
        objective: Callable[..., Any],
        first: int,
        signal: threading.Event,
    ) -> None:
        super().__init__(server, objective)
        self.first = first
        self.signal = signal

    def send(self, message: TrialMessage, queue: str, timeout: float) -> None:
        super().send(message, queue, timeout)
        if message.trial >= self.first:
            self.signal.set()


class ConcurrentWorkers(SignalWhenSent):
    """SignalWhenSent whose messages each run on a thread of their own, as on as many slots:
    a trial that waits does not hold up the others."""

    def _run(self) -> None:
        threads: list[threading.Thread] = []
        while not self._stop.is_set():
            with self._lock:
                batch, self._queue = self._queue, []
            for message in batch:
                thread = threading.Thread(target=execute, args=(message.to_dict(), self.runtime))
                thread.start()
                threads.append(thread)
            time.sleep(0.01)
        for thread in threads:
            thread.join(5)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def store_on(server: fakeredis.FakeServer, name: str = "demo") -> StudyStore:
    return StudyStore(fakeredis.FakeRedis(server=server, decode_responses=True), "zoomtune:", name)


def run(
    server: fakeredis.FakeServer,
    spec: StudySpec,
    workers: ThreadWorkers,
    on_round: Callable[[], None] | None = None,
    progress: io.StringIO | None = None,
) -> Any:
    loop = RoundLoop(
        spec, store_on(server), workers, LogProgress(progress), FAST, on_round=on_round
    )
    with workers:
        return loop.run()


def score(params: dict[str, Any], trial: Any) -> float:
    return deterministic_score(params)


def snapshot(server: fakeredis.FakeServer) -> list[tuple[int, int, dict[str, Any], float | None]]:
    return [(t.number, t.round, dict(t.params), t.score) for t in store_on(server).trials()]


def test_a_study_runs_to_the_end_and_records_every_trial_once(
    server: fakeredis.FakeServer,
) -> None:
    outcome = run(server, spec_for(), ThreadWorkers(server, score))
    store = store_on(server)
    trials = store.trials()
    assert outcome.state == "complete"
    assert [t.number for t in trials] == list(range(15))
    assert all(t.status is TrialStatus.COMPLETE for t in trials)
    assert store.meta()["state"] == "complete"
    best_score = min(t.score for t in trials if t.score is not None)
    assert outcome.best is not None
    assert outcome.best[1] == best_score


def test_the_finish_order_does_not_change_the_study(server: fakeredis.FakeServer) -> None:
    run(server, spec_for(), ThreadWorkers(server, score, order_seed=1))
    other = fakeredis.FakeServer()
    run(other, spec_for(), ThreadWorkers(other, score, order_seed=2))
    assert snapshot(server) == snapshot(other)
    assert [r.box for r in store_on(server).rounds()] == [r.box for r in store_on(other).rounds()]


def test_a_stopped_coordinator_resumes_without_resampling(server: fakeredis.FakeServer) -> None:
    # Given a reference run
    reference = fakeredis.FakeServer()
    run(reference, spec_for(), ThreadWorkers(reference, score))

    # When a coordinator stops after round 1 and another starts on the same store
    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(server, spec_for(), ThreadWorkers(server, score), on_round=stop)
    # (round 2 may have been sent ahead of round 1's last trials: it is still provisional)
    rounds = store_on(server).rounds()
    assert [(r.number, r.provisional) for r in rounds][:1] == [(1, False)]
    assert all(r.provisional for r in rounds[1:])
    first_round = snapshot(server)[:5]
    outcome = run(server, spec_for(), ThreadWorkers(server, score))

    # Then round 1 was kept as written and the whole study equals the uninterrupted run
    assert outcome.state == "complete"
    assert snapshot(server)[:5] == first_round
    assert snapshot(server) == snapshot(reference)


def test_after_a_resume_the_progress_never_shows_a_best_worse_than_the_one_recorded(
    server: fakeredis.FakeServer,
) -> None:
    # Given a study stopped after round 1 (minimizing), whose best score is then recorded
    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(server, spec_for(), ThreadWorkers(server, score), on_round=stop)
    # (a round run ahead, should one be in the store, counts once it is final)
    final = {r.number for r in store_on(server).rounds() if not r.provisional}
    trials = store_on(server).trials()
    recorded = min(t.score for t in trials if t.score is not None and t.round in final)

    # When it resumes, its progress lines going to a log
    out = io.StringIO()
    assert run(server, spec_for(), ThreadWorkers(server, score), progress=out).state == "complete"

    # Then the first line already says the recorded best, and no line shows a worse one
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(f"best so far {recorded:.6g}"), lines[0]
    shown = [float(b) for b in re.findall(r"best (?:score so far )?([-\d.e+]+)", out.getvalue())]
    assert len(shown) > 5
    assert all(best <= float(f"{recorded:.6g}") for best in shown), lines


def test_a_round_without_a_completed_trial_fails_the_study(server: fakeredis.FakeServer) -> None:
    def broken(params: dict[str, Any], trial: Any) -> float:
        raise RuntimeError("no")

    outcome = run(server, spec_for(), ThreadWorkers(server, broken))
    assert (outcome.state, outcome.message) == ("failed", "round 1: 0 completed trials")
    assert store_on(server).meta()["state"] == "failed"
    assert [r.number for r in store_on(server).rounds()] == [1]


def test_a_failed_study_started_again_stays_failed(server: fakeredis.FakeServer) -> None:
    # Given a study that failed: no trial of round 1 completed
    def broken(params: dict[str, Any], trial: Any) -> float:
        raise RuntimeError("no")

    run(server, spec_for(), ThreadWorkers(server, broken))

    # When it is started again (with workers that would now succeed)
    workers = ThreadWorkers(server, score)
    outcome = run(server, spec_for(), workers)

    # Then it fails again with the same reason, sampling and sending nothing
    assert (outcome.state, outcome.message) == ("failed", "round 1: 0 completed trials")
    assert [r.number for r in store_on(server).rounds()] == [1]
    assert workers.sent == []


def test_a_handed_back_trial_is_sent_again_as_the_next_attempt(
    server: fakeredis.FakeServer,
) -> None:
    # Given a worker whose process dies while running trial 2's first attempt
    def dies_once(params: dict[str, Any], trial: Any) -> float:
        if trial.number == 2 and trial.attempt == 1:
            store = store_on(server)
            store.abandon(
                2,
                1,
                store.trial(2).host or "",
                int(store.client.hget(store.keys.trial(2), "pid") or 0),
                "worker lost (signal 9)",
            )
            return 0.0  # this late result is dropped: the attempt no longer owns the trial
        return score(params, trial)

    workers = ThreadWorkers(server, dies_once)
    run(server, spec_for(rounds=1), workers)
    trial = store_on(server).trial(2)
    assert (trial.status, trial.attempt) == (TrialStatus.COMPLETE, 2)
    assert trial.score == pytest.approx(score(dict(trial.params), None))
    # Attempt 1, then attempt 2. (With a 0.3 s lease, a loaded machine may also send attempt 1
    # again when its message looks lost: a duplicate that the store drops.)
    attempts = [m.attempt for m in workers.sent if m.trial == 2]
    assert attempts[0] == 1
    assert set(attempts) == {1, 2}


def test_a_lost_message_is_sent_again(server: fakeredis.FakeServer) -> None:
    lost: list[int] = []

    def lose_trial_3_once(message: TrialMessage) -> bool:
        if message.trial == 3 and not lost:
            lost.append(3)
            return True
        return False

    workers = ThreadWorkers(server, score, drop=lose_trial_3_once)
    outcome = run(server, spec_for(rounds=1), workers)
    assert outcome.state == "complete"
    assert [m.attempt for m in workers.sent if m.trial == 3] == [1, 1]


@pytest.mark.timeout(60)
def test_a_worker_without_the_objective_stops_the_study_instead_of_waiting_forever(
    server: fakeredis.FakeServer,
) -> None:
    # Given workers on which the study's objective is not registered
    workers = ThreadWorkers(server, score)
    workers.runtime.registry.targets.clear()

    # When the study runs
    with pytest.raises(TrialRejected) as refused:
        run(server, spec_for(), workers)

    # Then it stops at the first refusal, naming the worker and why, writing no end state
    assert re.match(
        r"trial \d+ was refused by worker thread: objective 'obj' is not registered on worker "
        r"thread .*then run the same `coordinator start` again to resume the study$",
        str(refused.value),
    ), refused.value
    store = store_on(server)
    assert store.meta()["state"] == "running"
    assert all(t.status is TrialStatus.QUEUED for t in store.trials())

    # And once the workers have it, the same study resumes and completes
    assert run(server, spec_for(), ThreadWorkers(server, score)).state == "complete"


def test_a_second_coordinator_on_a_running_study_is_refused(
    server: fakeredis.FakeServer,
) -> None:
    store_on(server).acquire(ttl=30, owner="node-a:1")
    loop = RoundLoop(
        spec_for(), store_on(server), ThreadWorkers(server, score), LogProgress(), FAST
    )
    with pytest.raises(StudyLocked, match="node-a:1"):
        loop.run()


def test_a_changed_study_file_under_the_same_name_is_refused(
    server: fakeredis.FakeServer,
) -> None:
    run(server, spec_for(rounds=1), ThreadWorkers(server, score))
    with pytest.raises(StudyExists):
        run(server, spec_for(rounds=1, seed=99), ThreadWorkers(server, score))


# --- early stopping ------------------------------------------------------------------------


def pruning_toml(rounds: int = 3, trials: int = 8) -> str:
    return study_toml(
        objective="obj", rounds=rounds, trials_per_round=trials, seed=11, resources=RESOURCES
    )


def test_pruned_trials_are_a_function_of_the_seed_in_any_finish_order(
    server: fakeredis.FakeServer,
) -> None:
    # Given a study whose objective reports a predictive curve and asks should_prune
    toml = pruning_toml()
    expected = PrunedRun.reference(toml)
    assert expected.pruned, "the test needs a study that prunes"
    assert expected.rungs[0] == []  # round 1 has no reference: nothing is pruned there

    # When it runs twice, its trials finishing in two different orders
    workers = ThreadWorkers(server, prunable, order_seed=1)
    outcome = run(server, StudySpec.from_toml(toml), workers)
    other = fakeredis.FakeServer()
    run(other, StudySpec.from_toml(toml), ThreadWorkers(other, prunable, order_seed=2))

    # Then both pruned the same trials at the same steps, with the reference's rungs
    assert outcome.state == "complete"
    assert PrunedRun.from_store(store_on(server)) == expected
    assert PrunedRun.from_store(store_on(other)) == expected
    # And every trial has its round's rungs, which every message carried, except messages of
    # a round run ahead, sent before its rungs were final (its trials were judged against them)
    rounds = store_on(server).rounds()
    for trial in store_on(server).trials():
        assert trial.rungs == rounds[trial.round - 1].rungs
    for message in workers.sent:
        [record] = [r for r in rounds if message.trial in r.trial_numbers]
        assert message.rungs == record.rungs or record.written_ahead
    # And the best trial is the best COMPLETE one (a pruned trial's last value is not a score)
    complete = [t for t in store_on(server).trials() if t.status is TrialStatus.COMPLETE]
    assert outcome.best is not None
    assert outcome.best[1] == min(t.score for t in complete if t.score is not None)


def test_a_resumed_study_computes_the_same_rungs(server: fakeredis.FakeServer) -> None:
    toml = pruning_toml()
    rounds_done: list[int] = []

    def stop_after_round_2() -> None:
        rounds_done.append(1)
        if len(rounds_done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(server, StudySpec.from_toml(toml), ThreadWorkers(server, prunable), stop_after_round_2)
    run(server, StudySpec.from_toml(toml), ThreadWorkers(server, prunable))

    assert PrunedRun.from_store(store_on(server)) == PrunedRun.reference(toml)


def test_a_round_whose_trials_are_all_pruned_stops_the_study(server: fakeredis.FakeServer) -> None:
    # Given an objective whose round-2 trials are all far worse than round 1's at every step
    def worse_in_round_2(params: dict[str, Any], trial: Any) -> float:
        offset = 100.0 if trial.number >= 8 else 0.0
        for step in range(1, 10):
            trial.report(step, learning_curve(params, step) + offset)
            if trial.should_prune():
                return 0.0
        return learning_curve(params, 9) + offset

    outcome = run(
        server, StudySpec.from_toml(pruning_toml()), ThreadWorkers(server, worse_in_round_2)
    )

    # Then round 2 counts no completed trial, and the study stops as for failed trials
    assert (outcome.state, outcome.message) == ("failed", "round 2: 0 completed trials")
    round_2 = store_on(server).trials(range(8, 16))
    assert {(t.status, t.last_step) for t in round_2} == {(TrialStatus.PRUNED, 1)}


def test_pruned_trials_show_in_status_trials_csv_and_study_json(
    server: fakeredis.FakeServer, tmp_path: Path
) -> None:
    # Given a finished study that pruned some trials
    run(server, StudySpec.from_toml(pruning_toml()), ThreadWorkers(server, prunable))
    record = StudyRecord.from_store(store_on(server))
    pruned = [t for t in record.trials if t.status is TrialStatus.PRUNED]
    assert pruned

    # Then status counts them per round
    console = Console(width=200, record=True)
    console.print(status_view(record, Findings.of(record)))
    lines = [line.split() for line in console.export_text().splitlines()]
    header = next([c for c in line if c != "┃"] for line in lines if "pruned" in line)
    assert header[:7] == ["round", "trials", "complete", "running", "queued", "failed", "pruned"]
    for summary in record.round_summaries():
        row = next(line for line in lines if line[:3] == ["│", str(summary.number), "│"])
        cells = [cell for cell in row if cell != "│"]
        assert cells[6] == str(summary.count(TrialStatus.PRUNED))
    # And trials.csv has them as "pruned" with where they stopped, and no score
    rows = list(csv.DictReader(io.StringIO(trials_csv(record))))
    for trial in pruned:
        row = rows[trial.number]
        assert (row["status"], row["score"]) == ("pruned", "")
        assert (int(row["last_step"]), float(row["last_value"])) == (
            trial.last_step,
            trial.last_value,
        )
    # And study.json keeps them, with each round's rungs, and reads back the same
    (tmp_path / "study.json").write_text(study_json(record))
    again = StudyRecord.from_json_file(tmp_path / "study.json")
    assert again.trials == record.trials
    assert [r.rungs for r in again.rounds] == [r.rungs for r in record.rounds]
    assert record.best() is not None
    assert record.best().status is TrialStatus.COMPLETE


def test_rungs_are_never_computed_from_unfinished_trials(server: fakeredis.FakeServer) -> None:
    running = Trial("demo", 0, 1, {"x": 0.5, "y": 2}, status=TrialStatus.RUNNING)

    with pytest.raises(StoreError, match=r"unfinished trials \[0\]"):
        round_rungs(StudySpec.from_toml(pruning_toml()), store_on(server), [running], {})


def round_one_ranks(server: fakeredis.FakeServer) -> list[int]:
    """Round 1's trial numbers, best (lowest score) first."""
    trials = [t for t in store_on(server).trials() if t.round == 1]
    return [t.number for t in sorted(trials, key=lambda t: (t.score, t.number))]


@pytest.mark.parametrize("rounds_ahead", [1, 2])
@pytest.mark.parametrize("straggler_rank", ["best", "worst"])
def test_rounds_run_ahead_of_a_straggler_are_the_rounds_the_barrier_runs(
    straggler_rank: str, rounds_ahead: int
) -> None:
    # Given the study run with the round barrier and nothing run ahead
    barrier = fakeredis.FakeServer()
    run(barrier, spec_for(rounds=4, speculate=False), ThreadWorkers(barrier, score))
    ranks = round_one_ranks(barrier)
    straggler = ranks[0] if straggler_rank == "best" else ranks[-1]

    # When round 1's best (or worst) trial runs only once round 2 (or 3) was sent: round 2
    # runs ahead of it (and round 3 ahead of round 2, narrowed from round 2 as run ahead)
    server = fakeredis.FakeServer()
    workers = StragglerWorkers(server, score, straggler=straggler, ahead_from=5 * rounds_ahead)
    out = io.StringIO()
    assert run(server, spec_for(rounds=4), workers, progress=out).state == "complete"

    # Then the study is the barrier's, every round final
    assert workers.released_by_ahead
    assert snapshot(server) == snapshot(barrier)
    assert [r.box for r in store_on(server).rounds()] == [r.box for r in store_on(barrier).rounds()]
    assert not any(r.provisional for r in store_on(server).rounds())
    if rounds_ahead == 2:
        assert "round 3: 5 trials sent ahead while 1 trial it depends on still runs" in (
            out.getvalue()
        )
    # Round 2 was narrowed around round 1's best trial: run ahead without it, it came out
    # different and was sent again; without the worst it came out the same and was kept.
    [made_final] = re.findall(r"round 2: (\d) of 5 trials run ahead kept", out.getvalue())
    assert int(made_final) < 5 if straggler_rank == "best" else made_final == "5"


def test_rounds_run_ahead_with_a_lag_are_the_rounds_the_barrier_runs() -> None:
    # Given a study with rolling rounds (lag 2: round 2 waits for trials 0-2, round 3 for 0-7),
    # run without speculation
    barrier = fakeredis.FakeServer()
    run(barrier, spec_for(rounds=4, lag=2, speculate=False), ThreadWorkers(barrier, score))

    # When trial 0, which every later round narrows from, runs only once round 3 was sent:
    # rounds 2 and 3 run ahead of it
    server = fakeredis.FakeServer()
    workers = StragglerWorkers(server, score, straggler=0, ahead_from=10)
    out = io.StringIO()
    assert run(server, spec_for(rounds=4, lag=2), workers, progress=out).state == "complete"

    # Then the study is the barrier's, every round final
    assert workers.released_by_ahead
    assert "round 3: 5 trials sent ahead" in out.getvalue()
    assert snapshot(server) == snapshot(barrier)
    assert [r.box for r in store_on(server).rounds()] == [r.box for r in store_on(barrier).rounds()]
    assert not any(r.provisional for r in store_on(server).rounds())


@pytest.mark.parametrize("rounds_ahead", [1, 2])
def test_a_coordinator_stopped_with_rounds_run_ahead_resumes_to_the_same_study(
    rounds_ahead: int,
) -> None:
    barrier = fakeredis.FakeServer()
    run(barrier, spec_for(rounds=4, speculate=False), ThreadWorkers(barrier, score))
    straggler = round_one_ranks(barrier)[0]

    # Given a coordinator stopped just after it sent round 2 ahead of round 1's best trial (and
    # round 3 ahead of round 2)
    class StopWhenAhead(StragglerWorkers):
        def send(self, message: TrialMessage, queue: str, timeout: float) -> None:
            super().send(message, queue, timeout)
            if message.trial >= 5 * rounds_ahead:
                raise KeyboardInterrupt

    server = fakeredis.FakeServer()
    workers = StopWhenAhead(server, score, straggler=straggler, ahead_from=99)
    with pytest.raises(KeyboardInterrupt):
        run(server, spec_for(rounds=4), workers)
    rounds = [(r.number, r.provisional) for r in store_on(server).rounds()]
    assert rounds == [(1, False), *((n, True) for n in range(2, rounds_ahead + 2))]

    # When another coordinator takes over
    outcome = run(server, spec_for(rounds=4), ThreadWorkers(server, score))

    # Then it made them final from the real results: the study is the barrier's
    assert outcome.state == "complete"
    assert snapshot(server) == snapshot(barrier)
    assert not any(r.provisional for r in store_on(server).rounds())


def test_a_final_round_after_a_provisional_one_is_refused_on_resume(
    server: fakeredis.FakeServer,
) -> None:
    # Given a store whose round 2 is provisional and round 3 final: no coordinator writes that
    spec = spec_for(rounds=4)
    store = store_on(server)
    lock = store.acquire(ttl=30)
    epoch = store.create(lock, spec.to_dict(), max_attempts=3)
    search = CoarseToFine(spec)
    store.write_round(lock, epoch, 1, {}, search.ask_next())
    ahead = search.provisional_rounds({}, 2)
    store.write_round(lock, epoch, 2, {}, ahead[0].batch, provisional=True)
    store.write_round(lock, epoch, 3, {}, ahead[1].batch)
    store.release(lock)

    # Then a coordinator stops at once, naming the rounds
    with pytest.raises(StoreError, match="round 3 in the store is final after round 2"):
        run(server, spec, ThreadWorkers(server, score))


@pytest.mark.parametrize("rounds_ahead", [1, 2])
@pytest.mark.parametrize("straggler_rank", ["best", "worst"])
def test_rounds_run_ahead_with_early_stopping_prune_what_the_barrier_prunes(
    straggler_rank: str, rounds_ahead: int
) -> None:
    # Given a study that prunes, whose round 1 best (or worst) trial is the last to run, once
    # round 2 (or 3) was sent: the rounds run ahead of it get other rungs (and, without the
    # best, another box) than the rounds made final, so their trials are sent again or judged
    # against the final rungs
    toml = pruning_toml()
    expected = PrunedRun.reference(toml)
    round_one = sorted(range(8), key=lambda n: expected.trials[n][2])  # minimize: best first
    straggler = round_one[0] if straggler_rank == "best" else round_one[-1]
    server = fakeredis.FakeServer()
    workers = StragglerWorkers(server, prunable, straggler=straggler, ahead_from=8 * rounds_ahead)

    # When it runs
    assert run(server, StudySpec.from_toml(toml), workers).state == "complete"

    # Then it pruned exactly the trials the barrier prunes, at the same steps
    assert workers.released_by_ahead
    assert PrunedRun.from_store(store_on(server)) == expected
    assert store_on(server).to_judge(range(24)) == set()


@pytest.mark.parametrize("rounds_ahead", [1, 2])
def test_a_coordinator_whose_script_replies_are_lost_runs_the_barriers_study(
    rounds_ahead: int,
) -> None:
    # Given a study that prunes, whose round 1 best trial is the last to run, so that the rounds
    # run ahead of it are sent again and judged; every script the coordinator calls runs twice
    # and answers the second time (redis-py sends a call again when its reply was lost)
    toml = pruning_toml()
    expected = PrunedRun.reference(toml)
    straggler = min(range(8), key=lambda n: expected.trials[n][2])  # minimize: the best
    server = fakeredis.FakeServer()
    workers = StragglerWorkers(server, prunable, straggler=straggler, ahead_from=8 * rounds_ahead)
    spec = StudySpec.from_toml(toml)
    loop = RoundLoop(spec, RepliesLost(store_on(server)), workers, LogProgress(None), FAST)

    # When it runs
    with workers:
        assert loop.run().state == "complete"

    # Then it is the barrier's study, its pruned set included
    assert workers.released_by_ahead
    assert PrunedRun.from_store(store_on(server)) == expected


def test_a_round_runs_ahead_of_one_whose_only_live_trial_still_runs_and_reports() -> None:
    # Given round 2 of a study where every trial fails but one, which reports its first step
    # and then runs on until a trial of round 3 is sent (or 10 s pass)
    straggler = 7
    round_three_sent = threading.Event()

    def objective(params: dict[str, Any], trial: Any) -> float:
        if not 5 <= trial.number < 10:  # rounds 1 and 3 complete (round 1: curves to guess from)
            trial.report(1, learning_curve(params, 1))
            return learning_curve(params, 2)
        if trial.number == straggler:
            trial.report(1, learning_curve(params, 1))
            round_three_sent.wait(10.0)
            return learning_curve(params, 2)
        raise RuntimeError("diverged")

    server = fakeredis.FakeServer()
    out = io.StringIO()
    started = time.monotonic()

    # When it runs: no trial of round 2 has completed while the straggler runs
    workers = SignalWhenSent(server, objective, first=10, signal=round_three_sent)
    outcome = run(server, spec_for(), workers, progress=out)

    # Then round 3 ran ahead of it, guessed from its report, and the study is complete
    assert outcome.state == "complete"
    assert "round 3: 5 trials sent ahead while" in out.getvalue()
    assert time.monotonic() - started < 10.0


def test_a_round_run_ahead_is_sampled_again_from_reports_before_any_result() -> None:
    # Given round 1's last trial still running: it reports a poor first step, so round 2 runs
    # ahead narrowed around another trial; then, with no result in between, a second step
    # better than any trial's there
    straggler = 4
    round_two_ahead = threading.Event()
    resampled = threading.Event()

    def objective(params: dict[str, Any], trial: Any) -> float:
        if trial.number != straggler:
            trial.report(1, learning_curve(params, 1))
            trial.report(2, learning_curve(params, 2))
            return learning_curve(params, 3)
        trial.report(1, 100.0)  # minimize: the worst value at step 1
        round_two_ahead.wait(10.0)
        trial.report(2, -100.0)  # the best value at step 2
        resampled.wait(10.0)
        return -100.0

    class Workers(ThreadWorkers):
        def _run(self) -> None:  # the straggler last, so that round 1's others finish first
            while not self._stop.is_set():
                with self._lock:
                    batch, self._queue = self._queue, []
                batch.sort(key=lambda m: m.trial == straggler)
                for message in batch:
                    execute(message.to_dict(), self.runtime)
                time.sleep(0.01)

        def send(self, message: TrialMessage, queue: str, timeout: float) -> None:
            super().send(message, queue, timeout)
            round_two = [m.trial for m in self.sent if 5 <= m.trial < 10]
            if round_two:
                round_two_ahead.set()
            if len(round_two) > len(set(round_two)):
                resampled.set()  # a round-2 trial sent again: the round was sampled again

    server = fakeredis.FakeServer()
    started = time.monotonic()

    # When it runs
    outcome = run(server, spec_for(), Workers(server, objective))

    # Then round 2 was sampled again (and a trial of it sent again) while the straggler still
    # ran, from its second report alone
    assert outcome.state == "complete"
    assert resampled.is_set()
    assert time.monotonic() - started < 10.0


@pytest.mark.parametrize("rounds", [3, 4])
def test_a_round_that_fails_while_the_next_runs_ahead_fails_the_study_for_good(
    rounds: int,
) -> None:
    # Given round 2's only live trial, which reports, lets round 3 (and with 4 rounds, round 4
    # after it) run ahead, then fails
    straggler = 7
    last_round_sent = threading.Event()

    def objective(params: dict[str, Any], trial: Any) -> float:
        if trial.number < 5:
            trial.report(1, learning_curve(params, 1))
            return learning_curve(params, 2)
        if trial.number >= 10:
            return -1.0  # rounds 3 on would hold the best trial (minimize)
        if trial.number == straggler:
            trial.report(1, learning_curve(params, 1))
            last_round_sent.wait(10.0)
        raise RuntimeError("diverged")

    server = fakeredis.FakeServer()
    workers = ConcurrentWorkers(server, objective, first=5 * rounds - 5, signal=last_round_sent)
    outcome = run(server, spec_for(rounds=rounds), workers)

    # Then the study failed at round 2, and the rounds run ahead stay provisional: never
    # told, and no trial of them counts for the best
    assert (outcome.state, outcome.message) == ("failed", "round 2: 0 completed trials")
    assert last_round_sent.is_set()
    stored = [(r.number, r.provisional) for r in store_on(server).rounds()]
    assert stored == [(1, False), (2, False), *((n, True) for n in range(3, rounds + 1))]
    best = StudyRecord.from_store(store_on(server)).best()
    assert best is not None
    assert best.round == 1

    # ... and started again, it fails again, running nothing
    workers = ThreadWorkers(server, score)
    again = run(server, spec_for(rounds=rounds), workers)
    assert (again.state, again.message) == ("failed", "round 2: 0 completed trials")
    assert all(t.status is not TrialStatus.RUNNING for t in store_on(server).trials())
