"""Training-like trials on 8 slots: zoomtune against distributed Optuna, side by side.

    python -m bench.training --quick              # one pair of runs, about a minute
    python -m bench.training                      # the full matrix (see BENCHMARKS.md)

Both sides run the built-in `synthetic-training` objective
(zoomtune/workers/objectives/training.py): epochs whose time grows with width and depth times a
lognormal jitter, reported every epoch, with `predictive` or `crossing` learning curves. One
invocation runs both tools on ONE freshly started redis-server, with the same number of slots (8)
and trials (q x rounds):

- **zoomtune**: a real `coordinator start STUDY_FILE --broker URL` (a subprocess) on a study
  file written here, against one real `worker start --concurrency 8` that is started once,
  warmed up with a small study, and kept for every zoomtune run. The study's `[search]` has
  `rounds` and `trials_per_round` from the configuration; TOML given with `--zoomtune-toml`
  (every run), `--zoomtune-no-pruning-toml` and `--zoomtune-pruning-toml` is merged into the
  study file as given (e.g. `'search = { lag = 8 }'`, `'early_stopping = { rule = "halving" }'`).
- **Optuna**: `optuna.storages.JournalStorage(JournalRedisBackend(url))` on the same Redis, TPE
  with `constant_liar=True`, 8 processes (bench/optuna_worker.py) that each run trials until
  the run has its q x rounds trials, with or without `SuccessiveHalvingPruner`: its first rung
  after epoch 1 (what Optuna's `min_resource="auto"` gives for 27 epochs) and
  `reduction_factor=3` (Optuna's default is 4; 3 is zoomtune's halving default), so rungs at
  epochs 1, 3, 9 and 27 (`--optuna-min-resource`, `--optuna-reduction-factor`).

Runs are interleaved: for each seed, for each case, one run of each tool, the first tool
alternating from pair to pair.

Measures of one run (each tool's own records of its trials):

- **busy slot-seconds**: the sum over trials of finish - start. zoomtune: `started_at` (the
  worker took the trial's lease, just before the objective runs) to `finished_at` (its fenced
  result), on Redis's clock. Optuna: `datetime_start` (the trial is created by `ask`, before
  TPE samples its parameters) to `datetime_complete` (`tell`), on the process's clock.
- **wall**: from the first trial's start to the last trial's finish, on the same clocks (so
  neither the coordinator's nor the Optuna processes' start-up counts; both sides' processes
  are started and ready before their first trial).
- **utilization**: busy slot-seconds / (slots x wall).
- **training share**: the objective's own sleeps (epochs run x the trial's epoch time) /
  (slots x wall): utilization without each tool's own cost inside a trial (Optuna: TPE's
  sampling in `ask`, a journal write per report and a journal read per `should_prune`;
  zoomtune: a store write per report).
- **epochs**: reports summed over trials (each epoch reports once); as a share of trials x
  epochs, which is what a run without early stopping spends.
- **best**: the best final score (the value reported after the last epoch) among trials that
  ran every epoch (a trial stopped earlier has none), for both tools alike.
- **sent again** (zoomtune): how many times speculation sent a trial of a round run ahead
  again because it came out different (counter `revised_trials`), queued or started: the
  compute it spends, which busy slot-seconds leave out (an attempt sent again leaves no start
  or finish record).

Medians over seeds; ratios are zoomtune / Optuna in the same pair of runs (median, range). With
pruning, "best - no pruning" is the best minus that of the same tool's run without pruning at
the same configuration and seed (without pruning both curve kinds give the same final scores
and the same search, so one run serves both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import redis

from bench.distributed import stop_process, wait_for_workers
from bench.methods import from_optuna
from bench.optuna_worker import WorkerSettings
from zoomtune.common.errors import ConfigError
from zoomtune.common.redis_client import connect
from zoomtune.common.settings import Settings
from zoomtune.common.store import StudyStore
from zoomtune.common.study import StudySpec
from zoomtune.common.trial import TrialStatus
from zoomtune.coordinator.embedded import LocalWorkers
from zoomtune.coordinator.redis_server import RedisServer
from zoomtune.workers.objectives.training import CURVES, epoch_seconds

REPO = Path(__file__).resolve().parent.parent

SPACE: Mapping[str, Mapping[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
    "width": {"type": "int", "low": 16, "high": 512, "scale": "log"},
    "depth": {"type": "int", "low": 1, "high": 6},
    "momentum": {"type": "float", "low": 0.5, "high": 0.999, "scale": "reverse_log"},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
"""The study file's [space] for `synthetic-training`."""

TOOLS = ("zoomtune", "optuna")


class BenchError(RuntimeError):
    """A run that could not be measured (a process failed, a trial failed, a timeout)."""


# --- what is run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One column of the matrix: a configuration, with or without pruning, and the curves."""

    trials_per_round: int
    rounds: int
    pruning: bool
    curve: str

    @property
    def trials(self) -> int:
        return self.trials_per_round * self.rounds

    @property
    def config(self) -> str:
        return f"{self.trials_per_round}x{self.rounds}"

    @property
    def key(self) -> str:
        return f"{self.config}-{self.curve}-prune" if self.pruning else self.config

    @property
    def label(self) -> str:
        if not self.pruning:
            return f"{self.trials_per_round} x {self.rounds}, no early stopping"
        return f"{self.trials_per_round} x {self.rounds}, early stopping, {self.curve} curves"

    def unpruned(self) -> Case:
        return Case(self.trials_per_round, self.rounds, False, "predictive")


def parse_configs(text: str) -> list[tuple[int, int]]:
    """'16x6,8x12' -> [(16, 6), (8, 12)]."""
    configs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)x(\d+)", part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise SystemExit(f"a configuration is TRIALSxROUNDS such as 16x6, got {part!r}")
        configs.append((int(match[1]), int(match[2])))
    return configs


def cases(
    configs: Iterable[tuple[int, int]],
    pruning_configs: Iterable[tuple[int, int]],
    curves: Sequence[str],
) -> list[Case]:
    plain = [Case(q, rounds, False, "predictive") for q, rounds in configs]
    pruned = [Case(q, r, True, curve) for q, r in pruning_configs for curve in curves]
    return plain + pruned


# --- the zoomtune study file -----------------------------------------------------------------


def study_document(
    name: str, seed: int, case: Case, epochs: int, scale: float, extras: Sequence[str]
) -> dict[str, Any]:
    """The zoomtune study of one run, with each TOML text of `extras` merged in as given."""
    document: dict[str, Any] = {
        "study": {"name": name, "direction": "maximize", "seed": seed},
        "objective": {
            "name": "synthetic-training",
            "options": {"epochs": epochs, "scale": scale, "curve": case.curve},
        },
        "search": {"rounds": case.rounds, "trials_per_round": case.trials_per_round},
        "resources": {"timeout": "10m"},
        "space": {name: dict(entry) for name, entry in SPACE.items()},
    }
    for extra in extras:
        document = merge(document, tomllib.loads(extra))
    return document


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keys, tables merged key by key, other values replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def toml_text(document: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML file of `document`'s tables (nested tables written inline)."""
    lines = []
    for table, entries in document.items():
        lines.append(f"[{_toml_key(table)}]")
        lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in entries.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}"
    if isinstance(value, list | tuple):
        return f"[{', '.join(_toml_value(v) for v in value)}]"
    raise TypeError(f"cannot write {value!r} as TOML")


def early_stopping_supported() -> bool:
    """Whether this zoomtune's study files know an [early_stopping] table."""
    document = study_document("probe", 0, Case(1, 1, False, "predictive"), 1, 0.0, ())
    try:
        StudySpec.from_dict(document | {"early_stopping": {"rule": "none"}})
    except ConfigError:
        return False
    return True


# --- what is measured ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSpan:
    start: float
    finish: float
    epochs: int
    final: float | None
    """The final score, for a trial that ran every epoch; None for a pruned one."""
    work: float
    """Seconds the objective slept: its epochs run times its epoch time."""


@dataclass(frozen=True)
class Run:
    tool: str
    case: Case
    seed: int
    slots: int
    epochs_per_trial: int
    spans: tuple[TrialSpan, ...]
    elapsed: float
    """Seconds from launching the tool's run (zoomtune: `coordinator start`; Optuna: the start
    signal to its ready processes) to its end; for information only."""
    sent_again: int = 0
    """zoomtune: how many times a trial of a round run ahead was sent again because it came out
    different (the store's `revised_trials`): queued ones cost a message, started ones the
    compute they had run (speculation's price, never counted as busy here). Optuna has nothing
    like it: 0."""

    @property
    def busy(self) -> float:
        return sum(span.finish - span.start for span in self.spans)

    @property
    def wall(self) -> float:
        return max(s.finish for s in self.spans) - min(s.start for s in self.spans)

    @property
    def utilization(self) -> float:
        return self.busy / (self.slots * self.wall)

    @property
    def work_utilization(self) -> float:
        """Training time (the objective's sleeps) over slot time: what is left of utilization
        once each tool's own cost inside a trial (sampling, reports, pruning checks) is out."""
        return sum(span.work for span in self.spans) / (self.slots * self.wall)

    @property
    def epochs(self) -> int:
        return sum(span.epochs for span in self.spans)

    @property
    def epochs_share(self) -> float:
        return self.epochs / (len(self.spans) * self.epochs_per_trial)

    @property
    def best(self) -> float:
        finals = [span.final for span in self.spans if span.final is not None]
        return max(finals) if finals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "case": self.case.key,
            "config": self.case.config,
            "pruning": self.case.pruning,
            "curve": self.case.curve,
            "seed": self.seed,
            "utilization": self.utilization,
            "work_utilization": self.work_utilization,
            "wall": self.wall,
            "busy": self.busy,
            "elapsed": self.elapsed,
            "epochs": self.epochs,
            "epochs_share": self.epochs_share,
            "best": self.best,
            "sent_again": self.sent_again,
            "trials": [asdict(span) for span in self.spans],
        }


def final_score_of(reports: Mapping[int, float], epochs: int) -> float | None:
    """The rule for both tools: a trial's final score is the value it reported after the last
    epoch; a trial stopped before that has none (even if a pruner stopped it right after)."""
    return reports.get(epochs)


# --- running the two tools -------------------------------------------------------------------


@dataclass
class Bench:
    url: str
    workdir: Path
    slots: int
    epochs: int
    scale: float
    extras: Mapping[bool, Sequence[str]]
    """TOML merged into the zoomtune study file, for runs without (False) and with pruning."""
    timeout: float
    min_resource: int | str = 1
    reduction_factor: int = 3

    def run(self, tool: str, case: Case, seed: int) -> Run:
        if tool == "zoomtune":
            return self.run_zoomtune(case, seed)
        return self.run_optuna(case, seed)

    def run_zoomtune(self, case: Case, seed: int, name: str = "") -> Run:
        name = name or f"zoomtune-{case.key}-seed{seed}"
        document = study_document(
            name, seed, case, self.epochs, self.scale, self.extras[case.pruning]
        )
        study_file = self.workdir / f"{name}.toml"
        study_file.write_text(toml_text(document))
        env = dict(os.environ, ZOOMTUNE_BROKER_URL=self.url)
        command = [sys.executable, "-m", "zoomtune.coordinator.cli", "start", str(study_file)]
        command += ["--run-dir", str(self.workdir / "runs" / name)]
        launched = time.time()
        try:
            done = subprocess.run(
                command, cwd=REPO, env=env, capture_output=True, text=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{name}: coordinator start ran past {self.timeout:.0f}s") from exc
        elapsed = time.time() - launched
        if done.returncode != 0:
            raise BenchError(
                f"{name}: coordinator start exited with {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        client = connect(self.url)
        try:
            store = StudyStore(client, Settings.from_env().prefix, name)
            spans = []
            for trial in store.trials():
                steps = dict(store.reports(trial.number))
                if trial.started_at is None or trial.finished_at is None:
                    raise BenchError(f"{name}: trial {trial.number} ended {trial.status.value}")
                if trial.status not in (TrialStatus.COMPLETE, TrialStatus.PRUNED):
                    raise BenchError(f"{name}: trial {trial.number} {trial.status.value}")
                final = final_score_of(steps, self.epochs)
                work = len(steps) * epoch_seconds(trial.params, self.scale)
                spans.append(
                    TrialSpan(trial.started_at, trial.finished_at, len(steps), final, work)
                )
            sent_again = store.counters()["revised_trials"]
        finally:
            client.close()
        run = Run("zoomtune", case, seed, self.slots, self.epochs, tuple(spans), elapsed)
        return self._checked(replace(run, sent_again=sent_again))

    def run_optuna(self, case: Case, seed: int) -> Run:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalRedisBackend
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        name = f"optuna-{case.key}-seed{seed}"
        prefix = f"bench-optuna:{name}"  # a journal of its own: no process replays other runs
        storage = JournalStorage(JournalRedisBackend(self.url, prefix=prefix))
        optuna.create_study(study_name=name, storage=storage, direction="maximize")
        keys = {k: f"bench-optuna:{name}:{k}" for k in ("ready", "go", "count")}
        document = study_document(name, seed, case, self.epochs, self.scale, ())
        log = self.workdir / f"{name}.log"
        processes = []
        with log.open("ab") as out:
            for index in range(self.slots):
                settings = WorkerSettings(
                    url=self.url,
                    journal_prefix=prefix,
                    study=name,
                    index=index,
                    seed=seed,
                    trials=case.trials,
                    pruning=case.pruning,
                    min_resource=self.min_resource,
                    reduction_factor=self.reduction_factor,
                    study_document=document,
                    ready_key=keys["ready"],
                    go_key=keys["go"],
                    count_key=keys["count"],
                )
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.optuna_worker", json.dumps(asdict(settings))],
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        client = redis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 120
            while int(client.llen(keys["ready"])) < self.slots:
                if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                    raise BenchError(f"{name}: Optuna processes not ready:\n{_tail(log)}")
                time.sleep(0.05)
            launched = time.time()
            client.rpush(keys["go"], *["go"] * self.slots)
            deadline = time.monotonic() + self.timeout
            for process in processes:
                code = process.wait(max(1.0, deadline - time.monotonic()))
                if code != 0:
                    raise BenchError(f"{name}: an Optuna process exited with {code}:\n{_tail(log)}")
            elapsed = time.time() - launched
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{name}: Optuna ran past {self.timeout:.0f}s") from exc
        finally:
            for process in processes:
                if process.poll() is None:
                    stop_process(process)
            client.close()
        space = StudySpec.from_dict(document).space
        spans = []
        for trial in optuna.load_study(study_name=name, storage=storage).get_trials():
            if trial.datetime_start is None or trial.datetime_complete is None:
                raise BenchError(f"{name}: trial {trial.number} ended {trial.state.name}")
            if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                raise BenchError(f"{name}: trial {trial.number} {trial.state.name}")
            steps = trial.intermediate_values
            final = final_score_of(steps, self.epochs)
            params = from_optuna(space, trial.params)
            spans.append(
                TrialSpan(
                    trial.datetime_start.timestamp(),
                    trial.datetime_complete.timestamp(),
                    len(steps),
                    final,
                    len(steps) * epoch_seconds(params, self.scale),
                )
            )
        return self._checked(
            Run("optuna", case, seed, self.slots, self.epochs, tuple(spans), elapsed)
        )

    def _checked(self, run: Run) -> Run:
        if len(run.spans) != run.case.trials:
            raise BenchError(
                f"{run.tool} {run.case.key} seed {run.seed}: {len(run.spans)} trials, "
                f"expected {run.case.trials}"
            )
        return run

    def warm_up(self) -> None:
        """One small zoomtune study, so that the workers' pool processes are forked and warm."""
        warm = Bench(self.url, self.workdir, self.slots, 1, 0.0, {False: ()}, self.timeout)
        warm.run_zoomtune(Case(self.slots, 1, False, "predictive"), 0, name="warm-up")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


# --- the report ------------------------------------------------------------------------------


def summarize(runs: Sequence[Run], tools: Sequence[str]) -> list[dict[str, Any]]:
    """Per case: medians over seeds for each tool, and zoomtune / Optuna ratios per seed."""
    by_key = {(r.tool, r.case, r.seed): r for r in runs}
    rows = []
    for case in dict.fromkeys(r.case for r in runs):
        row: dict[str, Any] = {"case": case.key, "label": case.label}
        seeds = sorted({r.seed for r in runs if r.case == case})
        row["seeds"] = seeds
        for tool in tools:
            mine = [by_key[tool, case, s] for s in seeds if (tool, case, s) in by_key]
            if not mine:
                continue
            row[tool] = {
                "utilization": statistics.median(r.utilization for r in mine),
                "work_utilization": statistics.median(r.work_utilization for r in mine),
                "wall": statistics.median(r.wall for r in mine),
                "epochs_share": statistics.median(r.epochs_share for r in mine),
                "best": statistics.median(r.best for r in mine),
                "sent_again": statistics.median(r.sent_again for r in mine),
            }
            references = [
                (r.best, by_key[tool, case.unpruned(), r.seed].best)
                for r in mine
                if case.pruning and (tool, case.unpruned(), r.seed) in by_key
            ]
            if references:
                row[tool]["best_minus_no_pruning"] = statistics.median(b - a for b, a in references)
        pairs = [
            (by_key["zoomtune", case, s], by_key["optuna", case, s])
            for s in seeds
            if ("zoomtune", case, s) in by_key and ("optuna", case, s) in by_key
        ]
        for measure in ("utilization", "work_utilization", "wall"):
            ratios = [getattr(z, measure) / getattr(o, measure) for z, o in pairs]
            if ratios:
                row[f"{measure}_ratio"] = {
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                }
        rows.append(row)
    return rows


def markdown(rows: Sequence[Mapping[str, Any]], slots: int, trials: int) -> str:
    def tool(row: Mapping[str, Any], name: str, measure: str, fmt: str) -> str:
        value = row.get(name, {}).get(measure)
        return "" if value is None else format(value, fmt)

    def ratio(row: Mapping[str, Any], measure: str) -> str:
        r = row.get(f"{measure}_ratio")
        return "" if r is None else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"

    lines = [
        f"| case ({slots} slots, {trials} trials; median over seeds) | utilization zoomtune "
        "| utilization Optuna | ratio | training share zoomtune | training share Optuna | ratio "
        "| wall s zoomtune | wall s Optuna | ratio "
        "| epochs zoomtune | epochs Optuna | best zoomtune | best Optuna "
        "| best - no pruning, zoomtune | best - no pruning, Optuna | sent again, zoomtune |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row['label']} (seeds: {len(row['seeds'])})",
            tool(row, "zoomtune", "utilization", ".3f"),
            tool(row, "optuna", "utilization", ".3f"),
            ratio(row, "utilization"),
            tool(row, "zoomtune", "work_utilization", ".3f"),
            tool(row, "optuna", "work_utilization", ".3f"),
            ratio(row, "work_utilization"),
            tool(row, "zoomtune", "wall", ".1f"),
            tool(row, "optuna", "wall", ".1f"),
            ratio(row, "wall"),
            tool(row, "zoomtune", "epochs_share", ".0%"),
            tool(row, "optuna", "epochs_share", ".0%"),
            tool(row, "zoomtune", "best", ".4f"),
            tool(row, "optuna", "best", ".4f"),
            tool(row, "zoomtune", "best_minus_no_pruning", "+.4f"),
            tool(row, "optuna", "best_minus_no_pruning", "+.4f"),
            tool(row, "zoomtune", "sent_again", ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import optuna

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "date": date.today().isoformat(),
    }


# --- the command line ------------------------------------------------------------------------


FULL = {"configs": "16x6,8x12,32x3", "pruning_configs": "16x6", "seeds": 3, "scale": 0.04}
QUICK = {"configs": "16x6", "pruning_configs": "", "seeds": 1, "scale": 0.015}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"defaults {QUICK}")
    parser.add_argument("--configs", help=f"runs without pruning (default {FULL['configs']!r})")
    parser.add_argument(
        "--pruning-configs",
        help=f"runs with pruning, for each curve (default {FULL['pruning_configs']!r}; '' none)",
    )
    parser.add_argument("--curves", default=",".join(CURVES), help="curves of the pruning runs")
    parser.add_argument("--seeds", type=int, help=f"how many seeds (default {FULL['seeds']})")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument(
        "--scale", type=float, help=f"seconds per epoch, mid-sized model (default {FULL['scale']})"
    )
    parser.add_argument(
        "--zoomtune-toml",
        action="append",
        default=[],
        help="TOML merged into every zoomtune study file, e.g. 'search = { lag = 8 }'",
    )
    parser.add_argument(
        "--zoomtune-no-pruning-toml",
        help="TOML merged into the zoomtune runs without pruning (default: "
        "'early_stopping = { rule = \"none\" }' where [early_stopping] exists, else nothing)",
    )
    parser.add_argument(
        "--zoomtune-pruning-toml",
        default='early_stopping = { rule = "halving" }',
        help="TOML merged into the zoomtune runs with pruning (default: %(default)s)",
    )
    parser.add_argument(
        "--optuna-min-resource",
        type=lambda text: text if text == "auto" else int(text),
        default=1,
        help="SuccessiveHalvingPruner: the first rung, in epochs, or 'auto' (Optuna's "
        "default) (default %(default)s)",
    )
    parser.add_argument(
        "--optuna-reduction-factor",
        type=int,
        default=3,
        help="SuccessiveHalvingPruner: keep the top 1/eta at each rung (Optuna's default: 4) "
        "(default %(default)s)",
    )
    parser.add_argument("--run-timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "training.json")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    tools = [t for t in (t.strip() for t in args.tools.split(",")) if t]
    curves = [c for c in (c.strip() for c in args.curves.split(",")) if c]
    if not tools or set(tools) - set(TOOLS):
        raise SystemExit(f"--tools takes some of {TOOLS}, got {args.tools!r}")
    if set(curves) - set(CURVES):
        raise SystemExit(f"--curves takes some of {CURVES}, got {args.curves!r}")
    matrix = cases(parse_configs(args.configs), parse_configs(args.pruning_configs), curves)
    if not matrix:
        raise SystemExit("nothing to run: give --configs or --pruning-configs")
    no_pruning_toml = args.zoomtune_no_pruning_toml
    if no_pruning_toml is None:
        no_pruning_toml = 'early_stopping = { rule = "none" }' if early_stopping_supported() else ""
    extras = {
        False: [*args.zoomtune_toml, no_pruning_toml],
        True: [*args.zoomtune_toml, args.zoomtune_pruning_toml],
    }
    if "zoomtune" in tools and any(c.pruning for c in matrix) and not early_stopping_supported():
        print(
            "warning: this zoomtune has no [early_stopping] table: its runs with pruning will "
            "be refused (use --tools optuna, --pruning-configs '', or merge early stopping)",
            file=sys.stderr,
        )
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings |= {"zoomtune_extras": {"no_pruning": extras[False], "pruning": extras[True]}}
    settings["command"] = shlex.join(["python", "-m", "bench.training", *sys.argv[1:]])
    runs: list[Run] = []
    started = time.monotonic()

    def save() -> dict[str, Any]:
        summary = {
            "settings": settings,
            "machine": machine(),
            "minutes": (time.monotonic() - started) / 60,
            "runs": [r.to_dict() for r in runs],
            "summary": summarize(runs, tools),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        return summary

    with tempfile.TemporaryDirectory(prefix="zoomtune-bench-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        workers: LocalWorkers | None = None
        try:
            bench = Bench(
                server.url,
                workdir,
                args.slots,
                args.epochs,
                args.scale,
                extras,
                args.run_timeout,
                args.optuna_min_resource,
                args.optuna_reduction_factor,
            )
            if "zoomtune" in tools:
                log = workdir / "workers.log"
                workers = LocalWorkers(server.url, concurrency=args.slots, log_path=log).start()
                wait_for_workers(server.url, log)
                bench.warm_up()
            pair = 0
            for seed in seeds:
                for case in matrix:
                    order = tools if pair % 2 == 0 else tools[::-1]
                    pair += 1
                    for tool in order:
                        run = bench.run(tool, case, seed)
                        runs.append(run)
                        print(
                            f"seed {seed} {case.label}, {tool}: utilization "
                            f"{run.utilization:.3f} (training {run.work_utilization:.3f}), "
                            f"wall {run.wall:.1f}s, epochs {run.epochs} "
                            f"({run.epochs_share:.0%}), best {run.best:.4f}",
                            flush=True,
                        )
                save()
        except BenchError as exc:
            save()
            print(f"error: {exc}\n(the runs so far are in {args.out})", file=sys.stderr)
            sys.exit(1)
        finally:
            if workers is not None:
                workers.stop()
            server.stop()
    summary = save()
    table = markdown(summary["summary"], args.slots, matrix[0].trials)
    header = (
        f"Command: `{settings['command']}` ({summary['minutes']:.1f} min; "
        f"{summary['machine']['cpus']} CPUs, Python {summary['machine']['python']}, "
        f"optuna {summary['machine']['optuna']}, {summary['machine']['date']}).\n\n"
    )
    print("\n" + header + table)
    if args.markdown:
        args.markdown.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
