"""CoarseToFine: the pure ask/tell object behind every study.

```python
from common.study import StudySpec
from coordinator.search import CoarseToFine

search = CoarseToFine(StudySpec.from_file("study.toml"))
while batch := search.ask():          # the next round's parameter dicts; [] when done
    search.tell([(params, score_or_none) for params in batch])   # None = a failed trial
search.best                           # (params, score) of the best trial, or None
search.boxes                          # the Box each asked round sampled
```

Round 1 samples the whole space. Each later round r samples `trials_per_round[r - 1]` trials:
a share `explore` of them over the whole space, the rest inside the box that `narrow` draws
around the top-k trials of rounds 1..r-1. Choice parameters start narrowing one round later
(round 2 tries every choice inside the first narrowed box): round 1 pairs each choice with
random values of the other parameters, which is too little evidence to drop a choice for good.

Determinism, which the distributed coordinator relies on:

- round r's parameters depend only on the study (seed and settings), r and round r's box: they
  are drawn from `np.random.default_rng([seed mod 2**64, r])`;
- round r's box depends only on the parameters and scores told for rounds 1..r-1, in order.

So the whole study is a function of its seed and the scores, whatever the number of workers or
the order in which trials finish. To resume after a crash, rebuild the object from the stored
trials with `CoarseToFine.replay(spec, history)`: it re-asks and re-tells every stored round
(checking that the stored parameters are the ones the search would ask), and the next `ask()`
returns the round after them, exactly as before the crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import MessageError
from common.space import Box, ChoiceParameter, ParamValue
from common.study import StudySpec
from coordinator.narrowing import narrow, resolve_k, top_k
from coordinator.sampling import sample

_SEED_MODULUS = 2**64
"""Seeds are taken modulo 2**64 (numpy needs them >= 0); TOML's int64 range maps one to one."""


@dataclass(frozen=True)
class Told:
    """One trial told to the search: its parameters, its score (None: failed) and its round."""

    params: Mapping[str, ParamValue]
    score: float | None
    round: int


def explore_count(explore: float, n: int, round_number: int) -> int:
    """How many of a round's n trials are sampled over the whole space instead of the box.

    No trial in round 1 (which covers the whole space anyway); later `explore * n` rounded half
    up, leaving at least one trial for the box.
    """
    if round_number <= 1 or n <= 1:
        return 0
    return min(n - 1, math.floor(explore * n + 0.5))


class CoarseToFine:
    """Coarse-to-fine random search, asked and told one round at a time.

    Attributes that a coordinator persists or shows (all read-only views):

    - `round`: the number (from 1) of the round `ask()` returns now, asked or not yet asked;
      `spec.search.rounds + 1` once every round is told.
    - `rounds_told`: how many rounds were told; `done` once that is every round.
    - `pending`: whether the current round was asked and not told yet.
    - `box`: the box the current round samples (once done: the box a further round would).
    - `boxes`: the box of every asked round, in order.
    - `history`: every told trial as a `Told(params, score, round)`, in the order asked.
    - `best`: (params, score) of the best told trial with a finite score, or None.
    """

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec
        self._boxes: list[Box] = []
        self._box = spec.space.whole_box()
        self._history: list[Told] = []
        self._pending: list[dict[str, ParamValue]] | None = None

    @property
    def spec(self) -> StudySpec:
        return self._spec

    @property
    def rounds_told(self) -> int:
        return len(self._boxes) - (1 if self._pending is not None else 0)

    @property
    def round(self) -> int:
        return self.rounds_told + 1

    @property
    def done(self) -> bool:
        return self.rounds_told >= self._spec.search.rounds

    @property
    def pending(self) -> bool:
        return self._pending is not None

    @property
    def box(self) -> Box:
        return self._box

    @property
    def boxes(self) -> list[Box]:
        return list(self._boxes)

    @property
    def history(self) -> tuple[Told, ...]:
        return tuple(Told(dict(told.params), told.score, told.round) for told in self._history)

    @property
    def best(self) -> tuple[dict[str, ParamValue], float] | None:
        ranked = top_k(self._results(), 1, self._spec.maximize)
        if not ranked:
            return None
        params, score = ranked[0]
        return dict(params), score

    def ask(self) -> list[dict[str, ParamValue]]:
        """The current round's parameter dicts; the same again until told; [] once done.

        The box trials come first, the `explore_count(...)` trials over the whole space last.
        """
        if self.done:
            return []
        if self._pending is None:
            self._pending = self._sample(self.round, self._box)
            self._boxes.append(self._box)
        return [dict(params) for params in self._pending]

    def tell(self, results: Sequence[tuple[Mapping[str, Any], Any]]) -> None:
        """Record the scores of the asked round: one (params, score) per trial, in asked order.

        A score is a finite number, or None for a failed trial; NaN and inf are recorded but
        ranked like failures. Raises `MessageError` when nothing was asked, or when `results`
        is not the asked batch (length, or parameters in order), or a score is not a number.
        """
        asked = self._pending
        if asked is None:
            state = "every round is already told" if self.done else "call ask() first"
            raise MessageError(f"tell() without a pending round: {state}")
        if len(results) != len(asked):
            raise MessageError(
                f"round {self.round}: tell() needs the {len(asked)} asked trials in order, "
                f"got {len(results)}"
            )
        scores: list[float | None] = []
        for i, (expected, result) in enumerate(zip(asked, results, strict=True)):
            if not (isinstance(result, tuple | list) and len(result) == 2):
                raise MessageError(
                    f"round {self.round}, trial {i}: expected a (params, score) pair, "
                    f"got {result!r}"
                )
            params, score = result
            if not isinstance(params, Mapping) or dict(params) != expected:
                raise MessageError(
                    f"round {self.round}, trial {i}: told params {params!r} are not the asked "
                    f"params {expected!r} (results must be the asked batch, in order)"
                )
            scores.append(_score(score, self.round, i))
        round_number = self.round
        self._history.extend(
            Told(params, score, round_number) for params, score in zip(asked, scores, strict=True)
        )
        self._pending = None
        self._box = self._next_box()

    @classmethod
    def replay(cls, spec: StudySpec, history: Iterable[Told]) -> CoarseToFine:
        """Rebuild a search from its told trials (e.g. read back from the study store).

        `history` holds whole rounds, from round 1, each in asked order. Raises `MessageError`
        if it does not match what this spec asks (another seed, settings or a corrupted store).
        """
        search = cls(spec)
        by_round: dict[int, list[Told]] = {}
        for told in history:
            by_round.setdefault(told.round, []).append(told)
        if sorted(by_round) != list(range(1, len(by_round) + 1)):
            raise MessageError(
                f"replay needs whole rounds from 1 on, got rounds {sorted(by_round)!r}"
            )
        for round_number in range(1, len(by_round) + 1):
            if search.done:
                raise MessageError(
                    f"replay got {len(by_round)} rounds, the study has {spec.search.rounds}"
                )
            search.ask()
            search.tell([(told.params, told.score) for told in by_round[round_number]])
        return search

    def _results(self) -> list[tuple[Mapping[str, ParamValue], float | None]]:
        return [(told.params, told.score) for told in self._history]

    def _next_box(self) -> Box:
        settings = self._spec.search
        results = self._results()
        ranked = top_k(results, len(results), self._spec.maximize)
        k = resolve_k(settings.top_k, len(ranked))
        box = narrow(
            self._spec.space,
            self._box,
            ranked[:k],
            margin=settings.margin,
            min_shrink=settings.min_shrink,
            min_width=settings.min_width,
            runners_up=ranked[k:],
        )
        if self.rounds_told == 1:
            # Round 1 paired each choice with random values of everything else, so its scores
            # say little about the choice itself: round 2 narrows the numeric parameters only
            # and tries every choice inside that box; choices narrow from round 3 on.
            every_choice = {
                p.name: p.values for p in self._spec.space if isinstance(p, ChoiceParameter)
            }
            box = Box({**box.regions, **every_choice})
        return box

    def _sample(self, round_number: int, box: Box) -> list[dict[str, ParamValue]]:
        settings = self._spec.search
        n = settings.trials_per_round[round_number - 1]
        n_explore = explore_count(settings.explore, n, round_number)
        rng = np.random.default_rng([self._spec.seed % _SEED_MODULUS, round_number])
        space = self._spec.space
        inside = sample(space, n - n_explore, rng, method=settings.sampler, box=box)
        anywhere = sample(space, n_explore, rng, method=settings.sampler)
        return inside + anywhere


def _score(score: object, round_number: int, index: int) -> float | None:
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, int | float | np.integer | np.floating):
        raise MessageError(
            f"round {round_number}, trial {index}: a score must be a number or None, got {score!r}"
        )
    return float(score)
