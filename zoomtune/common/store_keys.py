"""The Redis key names of a study: every key zoomtune writes, in one place.

Every key of a study (`Keys`), under the configurable prefix; `{study}` is a Redis Cluster hash
tag, so one study's keys live on one node and a script may touch several:

    {prefix}studies                 set     names of all studies
    {prefix}{study}:spec            string  the study file as canonical JSON
    {prefix}{study}:meta            hash    state, epoch, coordinator, max_attempts, rounds, ...
    {prefix}{study}:lock            string  "<token> <host:pid>" of the coordinator, with a TTL
    {prefix}{study}:round:<r>       hash    round number, box, rungs, first trial, trial count
    {prefix}{study}:trial:<n>       hash    round, params, rungs, status, attempt, token, score, ...
    {prefix}{study}:lease:<n>       string  the token of the attempt running trial n, with a TTL
    {prefix}{study}:running         set     numbers of the RUNNING trials (what the reaper scans)
    {prefix}{study}:reports:<n>     list    intermediate values [step, value] as JSON
    {prefix}{study}:events          stream  started / finished / requeued / rejected / round / study
    {prefix}{study}:counters        hash    dropped deliveries and results, by reason
    {prefix}{study}:payload         string  a ZoomSearchCV's sealed payload (base64; on a cluster)
    {prefix}{study}:answer:<call>   string  a coordinator script's answer, kept for a call run again

The store's Lua scripts (zoomtune/common/lua/) receive these names as KEYS, never build them, except
the per-trial keys, which they build from the `*_prefix` keys passed as ARGV.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTERS = (
    "duplicate_deliveries",  # a message for a trial that is running or finished
    "stale_deliveries",  # a message for an attempt that was superseded
    "forged_messages",  # a message for an unknown trial, a future attempt, or other params
    "stale_results",  # a result from a superseded attempt
    "late_results",  # a result for a trial already finished
    "forged_results",  # a result with a wrong token or for an unknown trial
    "leases_expired",  # attempts the reaper found dead
    "workers_lost",  # attempts handed back by a worker whose process died or was preempted
    "revised_trials",  # trials of a round run ahead sent again with other params or rungs
)
"""The fields of the `counters` hash: messages and results the store dropped, and why."""


@dataclass(frozen=True)
class Keys:
    """Every Redis key name of one study, in one place."""

    prefix: str
    study: str

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}{{{self.study}}}:{suffix}"

    @staticmethod
    def studies(prefix: str) -> str:
        return f"{prefix}studies"

    @property
    def spec(self) -> str:
        return self._key("spec")

    @property
    def meta(self) -> str:
        return self._key("meta")

    @property
    def lock(self) -> str:
        return self._key("lock")

    @property
    def running(self) -> str:
        return self._key("running")

    @property
    def events(self) -> str:
        return self._key("events")

    @property
    def counters(self) -> str:
        return self._key("counters")

    def round(self, number: int) -> str:
        return self._key(f"round:{number}")

    @property
    def trial_prefix(self) -> str:
        return self._key("trial:")

    def trial(self, number: int) -> str:
        return f"{self.trial_prefix}{number}"

    @property
    def lease_prefix(self) -> str:
        return self._key("lease:")

    def lease(self, number: int) -> str:
        return f"{self.lease_prefix}{number}"

    @property
    def reports_prefix(self) -> str:
        return self._key("reports:")

    def reports(self, number: int) -> str:
        return f"{self.reports_prefix}{number}"

    def answer(self, call: str) -> str:
        return self._key(f"answer:{call}")

    @property
    def payload(self) -> str:
        return self._key("payload")

    def all_patterns(self) -> str:
        return self._key("*")
