"""Every error zoomtune raises on purpose derives from one root, so callers can catch them all.

```
ZoomtuneError
├── ConfigError            a study file, search space or setting is invalid (lists every problem)
│   └── SearchParameterError   a ZoomSearchCV argument is invalid (also a ValueError)
├── MessageError           a task message or stored record does not decode (bad shape or values)
├── ObjectiveError         an objective name is not in the worker's allow-list, or cannot load
├── BrokerError            Redis cannot be reached, or is configured to lose data
│   └── RunFolderInUse     a run folder's private Redis is held by processes still running
├── GpuError               `--gpus` names no usable GPU (none found, an unknown id, a bad value)
├── TrialRejected          a worker cannot run the study's objective (it is not registered there)
├── WorkersExited          the embedded default's local workers stopped while the study ran
├── ReadOnly               a write asked of the dashboard, which only reads the study's record
├── SearchFailed           a ZoomSearchCV search ended without a result (also a ValueError)
├── PayloadRefused         a scikit-learn study payload is missing, or its HMAC does not verify
└── StoreError             the study store refused an operation
    ├── StudyNotFound      no study of that name in the store
    ├── StudyExists        a different study of that name is already stored
    ├── StudyLocked        another coordinator holds the study's lease
    ├── LeaseLost          this coordinator's lease was taken or expired: it must stop writing
    ├── StudyWiped         the study's records vanished (Redis restarted without persistence)
    └── StudyCancelled     the study was cancelled (`coordinator cancel`): it dispatches no more
```
"""

from __future__ import annotations

from collections.abc import Sequence


class ZoomtuneError(Exception):
    """The root of every error zoomtune raises on purpose."""


class ConfigError(ZoomtuneError):
    """One or more problems in a study file, a search space or a setting.

    `problems` holds one line per problem, each naming the source, the field and the bad value.
    """

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class MessageError(ZoomtuneError):
    """A message or record does not have the expected shape or values."""


class ObjectiveError(ZoomtuneError):
    """An objective name is unknown to this worker, or its entry point cannot be loaded."""


class BrokerError(ZoomtuneError):
    """Redis cannot be reached, or is set up in a way that would lose the study."""


class RunFolderInUse(BrokerError):
    """Another coordinator, or processes one left behind, holds the run folder's Redis data."""


class GpuError(ZoomtuneError):
    """The GPUs a worker was asked to use cannot be found or pinned."""


class TrialRejected(ZoomtuneError):
    """A worker refused a trial because the study's objective is not registered on it."""


class WorkersExited(ZoomtuneError):
    """The local workers that the embedded default started exited while the study ran."""


class ReadOnly(ZoomtuneError):
    """A write asked of `coordinator dashboard`: only the coordinator and its workers write a
    study's record. The message starts "the dashboard is read-only: "."""


class PayloadRefused(ZoomtuneError):
    """A scikit-learn study payload is missing, malformed, or fails its HMAC check (forged,
    altered, sealed for another study or with another key): it was not unpickled."""


class SearchParameterError(ConfigError, ValueError):
    """A `ZoomSearchCV` argument is invalid. Also a ValueError, as scikit-learn expects of an
    estimator's bad parameters."""


class SearchFailed(ZoomtuneError, ValueError):
    """A `ZoomSearchCV` search ended without a usable result (every fit of a round failed).
    A ValueError too, as scikit-learn's searches raise one when all fits fail."""


class StoreError(ZoomtuneError):
    """The study store refused an operation."""


class StudyNotFound(StoreError):
    """No study of that name is in the store."""


class StudyExists(StoreError):
    """A study of that name with a different specification is already in the store."""


class StudyLocked(StoreError):
    """Another coordinator holds the study's lease."""


class LeaseLost(StoreError):
    """This coordinator no longer holds the study's lease, so it must stop writing."""


class StudyWiped(StoreError):
    """The study's records disappeared from Redis while it ran."""


class StudyCancelled(StoreError):
    """The study was cancelled: no trial of it is dispatched or started any more."""
