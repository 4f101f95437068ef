"""CoarseToFine: the pure ask/tell object behind every study.

```python
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.search import CoarseToFine

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

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoomtune.common.errors import MessageError
from zoomtune.common.parameters import ChoiceParameter, ParamValue
from zoomtune.common.space import Box
from zoomtune.common.study import StudySpec
from zoomtune.coordinator.narrowing import narrow, resolve_k, top_k
from zoomtune.coordinator.sampling import sample

_SEED_MODULUS = 2**64
"""Seeds are taken modulo 2**64 (numpy needs them >= 0); TOML's int64 range maps one to one."""


@dataclass(frozen=True)
class Told:
    """One trial told to the search: its parameters, its score (None: failed or pruned), its
    round, its trial number (from 0 in the order asked; None: the position in `history`), and
    whether it was pruned (early stopping) rather than failed."""

    params: Mapping[str, ParamValue]
    score: float | None
    round: int
    number: int | None = None
    pruned: bool = False


@dataclass(frozen=True)
class Provisional:
    """A round asked ahead, as it would be if its reference trials not told yet (`missing`)
    ended with the scores assumed for them (failed where none was)."""

    round: int
    box: Box
    batch: tuple[dict[str, ParamValue], ...]
    missing: tuple[int, ...]


def explore_count(explore: float, n: int, round_number: int) -> int:
    """How many of a round's n trials are sampled over the whole space instead of the box.

    No trial in round 1 (which covers the whole space anyway); later `explore * n` rounded half
    up, leaving at least one trial for the box.
    """
    if round_number <= 1 or n <= 1:
        return 0
    return min(n - 1, math.floor(explore * n + 0.5))


@dataclass(frozen=True)
class _Narrowing:
    """The box a round samples, and what it was narrowed from."""

    box: Box
    reference: int
    """The box was narrowed from trials 0 .. reference - 1 (0: the whole space)."""
    narrowings: int
    """How many times a box was narrowed from new results, up to and including this one."""


class CoarseToFine:
    """Coarse-to-fine random search, asked and told one round at a time, or rolling.

    Trials are numbered from 0 in the order asked. Round r's box is narrowed from the trials
    numbered below `first_trial(r) - lag` (`[search] lag`; with lag 0, every trial of rounds
    1..r-1): its *reference* trials. Two ways to drive it:

    - one round at a time, as a barrier: `ask()` the current round, `tell(results)` its scores,
      and again. Works for any lag (a round then simply sees fewer results).
    - rolling: `ask_next()` a round as soon as `can_ask()` (its reference trials are told),
      while earlier rounds still run, and `tell_trial(number, score)` each result as it comes,
      in any order. Both ways give the same rounds for the same scores (`tell` has no way to
      say that a trial was pruned rather than failed: `tell_trial(..., pruned=True)`).

    Attributes that a coordinator persists or shows (all read-only views):

    - `round`: the round `ask()` returns now: the oldest asked round not fully told, else the
      next round; `spec.search.rounds + 1` once every round is told.
    - `rounds_asked`, `rounds_told` (rounds whose every trial is told); `done` once every round
      is told; `pending`: some asked round is not fully told.
    - `box`: the box that `round` samples (once done: the box a further round would).
    - `boxes`: the box of every asked round, in order.
    - `history`: every told trial as a `Told(params, score, round, number)`, by trial number.
    - `best`: (params, score) of the best told trial with a finite score, or None.
    """

    def __init__(self, spec: StudySpec) -> None:
        self._spec = spec
        sizes = spec.search.trials_per_round
        self._firsts = tuple(itertools.accumulate(sizes, initial=0))
        self._asked: list[list[dict[str, ParamValue]]] = []
        self._narrowings: list[_Narrowing] = []
        self._scores: dict[int, float | None] = {}
        self._pruned: set[int] = set()
        self._told_in_round: list[int] = [0] * len(sizes)
        self._told_prefix = 0
        """Every trial numbered below this is told (so `can_ask` costs no scan)."""

    @property
    def spec(self) -> StudySpec:
        return self._spec

    @property
    def rounds_asked(self) -> int:
        return len(self._asked)

    @property
    def rounds_told(self) -> int:
        return sum(1 for r in range(1, self.rounds_asked + 1) if self.round_told(r))

    @property
    def round(self) -> int:
        oldest = self._oldest_pending()
        return oldest if oldest is not None else self.rounds_asked + 1

    @property
    def done(self) -> bool:
        return self.rounds_told >= self._spec.search.rounds

    @property
    def pending(self) -> bool:
        return self._oldest_pending() is not None

    @property
    def box(self) -> Box:
        if self.round <= self.rounds_asked:
            return self._narrowings[self.round - 1].box
        return self._narrowing_for(self.round).box

    @property
    def boxes(self) -> list[Box]:
        return [narrowing.box for narrowing in self._narrowings]

    @property
    def history(self) -> tuple[Told, ...]:
        return tuple(
            Told(dict(self._params(n)), self._scores[n], self._round_of(n), n, n in self._pruned)
            for n in sorted(self._scores)
        )

    @property
    def best(self) -> tuple[dict[str, ParamValue], float] | None:
        told = [(self._params(n), self._scores[n]) for n in sorted(self._scores)]
        ranked = top_k(told, 1, self._spec.maximize)
        if not ranked:
            return None
        params, score = ranked[0]
        return dict(params), score

    # -- trial numbers ---------------------------------------------------------------------------

    def first_trial(self, round_number: int) -> int:
        """The number of round `round_number`'s first trial (rounds from 1, trials from 0)."""
        self._check_round(round_number)
        return self._firsts[round_number - 1]

    def reference(self, round_number: int) -> range:
        """The trials whose results narrow round `round_number`'s box: every trial numbered
        below first_trial(round) - lag. Round r is asked only once all of them are told."""
        return range(max(0, self.first_trial(round_number) - self._spec.search.lag))

    def round_told(self, round_number: int) -> bool:
        first = self.first_trial(round_number)
        if round_number > self.rounds_asked:
            return False
        return self._told_in_round[round_number - 1] == self._firsts[round_number] - first

    # -- one round at a time ---------------------------------------------------------------------

    def ask(self) -> list[dict[str, ParamValue]]:
        """The current round's parameter dicts; the same again until told; [] once done.

        The box trials come first, the `explore_count(...)` trials over the whole space last.
        """
        if self.done:
            return []
        if self.round > self.rounds_asked:
            return self.ask_next()
        return [dict(params) for params in self._asked[self.round - 1]]

    def tell(self, results: Sequence[tuple[Mapping[str, Any], Any]]) -> None:
        """Record the scores of the current round: one (params, score) per trial, in asked order.

        A score is a finite number, or None for a failed or pruned trial (told here, a pruned
        trial counts as failed; `tell_trial(..., pruned=True)` tells it apart); NaN and inf are
        recorded but ranked like failures. Raises `MessageError` when nothing was asked, when
        `results` is not the asked batch (length, or parameters in order), when a score is not a
        number, or when some trial of the round was already told with `tell_trial`.
        """
        round_number = self._oldest_pending()
        if round_number is None:
            state = "every round is already told" if self.done else "call ask() first"
            raise MessageError(f"tell() without a pending round: {state}")
        asked = self._asked[round_number - 1]
        first = self.first_trial(round_number)
        if any(first + i in self._scores for i in range(len(asked))):
            raise MessageError(
                f"round {round_number}: tell() after tell_trial() for some of its trials"
            )
        if len(results) != len(asked):
            raise MessageError(
                f"round {round_number}: tell() needs the {len(asked)} asked trials in order, "
                f"got {len(results)}"
            )
        scores: list[float | None] = []
        for i, (expected, result) in enumerate(zip(asked, results, strict=True)):
            if not (isinstance(result, tuple | list) and len(result) == 2):
                raise MessageError(
                    f"round {round_number}, trial {i}: expected a (params, score) pair, "
                    f"got {result!r}"
                )
            params, score = result
            if not isinstance(params, Mapping) or dict(params) != expected:
                raise MessageError(
                    f"round {round_number}, trial {i}: told params {params!r} are not the asked "
                    f"params {expected!r} (results must be the asked batch, in order)"
                )
            scores.append(_score(score, round_number, i))
        for i, score in enumerate(scores):
            self._record(first + i, score)

    # -- rolling ---------------------------------------------------------------------------------

    def can_ask(self) -> bool:
        """Whether a next round exists and every one of its reference trials is told."""
        following = self.rounds_asked + 1
        if following > self._spec.search.rounds:
            return False
        return self._told_prefix >= len(self.reference(following))

    def ask_next(self) -> list[dict[str, ParamValue]]:
        """Ask the next round (rounds_asked + 1) while earlier rounds may still be running.

        Raises `MessageError` when every round is asked or the next one's reference trials are
        not all told yet (`can_ask()` says which)."""
        following = self.rounds_asked + 1
        if following > self._spec.search.rounds:
            raise MessageError(f"every one of the {self._spec.search.rounds} rounds is asked")
        missing = [n for n in self.reference(following) if n not in self._scores]
        if missing:
            raise MessageError(
                f"round {following} needs the results of trials {missing[0]}..{missing[-1]} "
                f"({len(missing)} not told yet)"
            )
        narrowing = self._narrowing_for(following)
        self._narrowings.append(narrowing)
        self._asked.append(self._sample(following, narrowing.box))
        return [dict(params) for params in self._asked[-1]]

    def provisional_next(self, assumed: Mapping[int, float] | None = None) -> Provisional | None:
        """The next round as `ask_next()` would return it if every reference trial not told yet
        ended with its `assumed` score (failed where none is given); None when every round is
        asked. Changes nothing. `provisional_rounds(assumed, 1)`, for one round.

        Speculation: while the last trials before a round still run, idle workers can run this
        batch. Once they are told, `ask_next()` gives the real batch; where a trial's parameters
        are the same (the explore trials always are; the box ones when the stragglers did not
        change the box) the work done ahead was the real work. Round r's parameters depend only
        on the seed and its box, so the two batches agree trial by trial or not at all within
        the box."""
        rounds = self.provisional_rounds(assumed or {}, 1)
        return rounds[0] if rounds else None

    def provisional_rounds(
        self,
        assumed: Mapping[int, float | None],
        depth: int,
        pruned: Iterable[int] = (),
        ran_with: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> list[Provisional]:
        """The next `depth` rounds (fewer at the end of the study) as `ask_next()` would return
        them, one after the other, if every trial not told yet ended with its `assumed` score:
        the trials of the rounds not yet asked included (failed where no score is given;
        pruned where in `pruned`). `ran_with`: the params that results assumed for trials of
        rounds not yet asked come from; where they are not the params sampled here, the trial
        counts as failed (it has not run with these). Changes nothing.

        Speculation more than one round deep: round r+2 is narrowed from round r+1's
        parameters as sampled here, with the guessed scores of its trials."""
        search = self._copy()
        pruned = set(pruned)
        ran_with = ran_with or {}
        rounds: list[Provisional] = []
        last = min(self._spec.search.rounds, self.rounds_asked + depth)
        for number in range(self.rounds_asked + 1, last + 1):
            for n in search.reference(number):
                if n in search._scores:
                    continue
                if n in ran_with and dict(ran_with[n]) != search._params(n):
                    search._record(n, None)
                    continue
                search._record(n, assumed.get(n))
                if n in pruned:
                    search._pruned.add(n)
            narrowing = search._narrowing_for(number)
            search._narrowings.append(narrowing)
            search._asked.append(search._sample(number, narrowing.box))
            missing = tuple(n for n in search.reference(number) if n not in self._scores)
            rounds.append(Provisional(number, narrowing.box, tuple(search._asked[-1]), missing))
        return rounds

    def tell_trial(self, number: int, score: Any, *, pruned: bool = False) -> None:
        """Record the score of trial `number` (None: failed or pruned), in any order, once.

        `pruned`: early stopping stopped it (its score is None). Like a failed trial it never
        enters the top-k, but unlike one it counts toward the number of trials that `top_k`
        sizes k from (`resolve_k`): it ran and ranked below a rung, so a study with early
        stopping narrows from as many of its best trials as the same study without it, which
        pruned only trials that ranked below those."""
        if not 0 <= number < self._firsts[self.rounds_asked]:
            raise MessageError(f"trial {number} was not asked")
        if number in self._scores:
            raise MessageError(f"trial {number} is already told")
        if pruned and score is not None:
            raise MessageError(f"trial {number}: a pruned trial has no score, got {score!r}")
        round_number = self._round_of(number)
        self._record(number, _score(score, round_number, number - self.first_trial(round_number)))
        if pruned:
            self._pruned.add(number)

    @classmethod
    def replay(cls, spec: StudySpec, history: Iterable[Told]) -> CoarseToFine:
        """Rebuild a search from its told trials (e.g. read back from the study store).

        `history` holds the told trials of rounds 1..R: whole rounds in asked order, or, with
        trial numbers (`Told.number`), any of each round's trials (rolling rounds). Raises
        `MessageError` if it does not match what this spec asks (another seed, settings or a
        corrupted store).
        """
        search = cls(spec)
        by_round: dict[int, list[Told]] = {}
        for told in history:
            by_round.setdefault(told.round, []).append(told)
        if sorted(by_round) != list(range(1, len(by_round) + 1)):
            raise MessageError(f"replay needs rounds from 1 on, got rounds {sorted(by_round)!r}")
        if len(by_round) > spec.search.rounds:
            raise MessageError(
                f"replay got {len(by_round)} rounds, the study has {spec.search.rounds}"
            )
        for round_number in range(1, len(by_round) + 1):
            asked = search.ask_next()
            first = search.first_trial(round_number)
            for i, told in enumerate(by_round[round_number]):
                number = first + i if told.number is None else told.number
                index = number - first
                if not 0 <= index < len(asked) or dict(told.params) != asked[index]:
                    raise MessageError(
                        f"round {round_number}, trial {number}: stored params "
                        f"{dict(told.params)!r} are not the asked params "
                        f"{asked[index] if 0 <= index < len(asked) else None!r}"
                    )
                search.tell_trial(number, told.score, pruned=told.pruned)
        return search

    # -- internals -------------------------------------------------------------------------------

    def _copy(self) -> CoarseToFine:
        """An independent copy to ask and tell hypothetically (the asked dicts are shared: they
        are never changed in place)."""
        other = CoarseToFine.__new__(CoarseToFine)
        other._spec, other._firsts = self._spec, self._firsts
        other._asked, other._narrowings = list(self._asked), list(self._narrowings)
        other._scores, other._pruned = dict(self._scores), set(self._pruned)
        other._told_in_round, other._told_prefix = list(self._told_in_round), self._told_prefix
        return other

    def _record(self, number: int, score: float | None) -> None:
        self._scores[number] = score
        self._told_in_round[self._round_of(number) - 1] += 1
        while self._told_prefix in self._scores:
            self._told_prefix += 1

    def _oldest_pending(self) -> int | None:
        for round_number in range(1, self.rounds_asked + 1):
            if not self.round_told(round_number):
                return round_number
        return None

    def _check_round(self, round_number: int) -> None:
        if not 1 <= round_number <= self._spec.search.rounds + 1:
            raise MessageError(
                f"round {round_number} is not a round of this study (1..{self._spec.search.rounds})"
            )

    def _round_of(self, number: int) -> int:
        return bisect.bisect_right(self._firsts, number)

    def _params(self, number: int) -> dict[str, ParamValue]:
        round_number = self._round_of(number)
        return self._asked[round_number - 1][number - self._firsts[round_number - 1]]

    def _narrowing_for(
        self, round_number: int, scores: Mapping[int, float | None] | None = None
    ) -> _Narrowing:
        """The box of round `round_number` (the next one to ask), from its reference trials'
        `scores` (default: the told ones).

        No reference trials: the whole space. The same reference as the previous round (no new
        results): the previous box, not narrowed twice from the same evidence. Otherwise the
        previous box narrowed around the top-k of the reference trials, k sized from the
        reference trials that completed or were pruned (see `tell_trial`)."""
        scores = self._scores if scores is None else scores
        whole = _Narrowing(self._spec.space.whole_box(), 0, 0)
        previous = self._narrowings[-1] if self._narrowings else whole
        known = self.reference(round_number)
        if not known or any(n not in scores for n in known):
            return previous if known and previous.reference else whole
        if len(known) == previous.reference:
            return previous
        settings = self._spec.search
        results = [(self._params(n), scores[n]) for n in known]
        ranked = top_k(results, len(results), self._spec.maximize)
        ranked_or_pruned = len(ranked) + sum(1 for n in known if n in self._pruned)
        k = resolve_k(settings.top_k, ranked_or_pruned)
        box = narrow(
            self._spec.space,
            previous.box,
            ranked[:k],
            margin=settings.margin,
            min_shrink=settings.min_shrink,
            min_width=settings.min_width,
            runners_up=ranked[k:],
            top_k_setting=settings.top_k,
            pruned=[self._params(n) for n in known if n in self._pruned],
        )
        narrowings = previous.narrowings + 1
        if narrowings == 1:
            # The first results paired each choice with random values of everything else, so
            # they say little about the choice itself: the first narrowed box narrows the
            # numeric parameters only and tries every choice; choices narrow from the next on.
            every_choice = {
                p.name: p.values for p in self._spec.space if isinstance(p, ChoiceParameter)
            }
            box = Box({**box.regions, **every_choice})
        return _Narrowing(box, len(known), narrowings)

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
