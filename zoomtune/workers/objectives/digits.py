"""Real models on scikit-learn's bundled digits data set (1797 8x8 images; no download).

Both are maximised (validation accuracy on a fixed held-out split). Options: `seed` (default 0),
`validation` (held-out share, default 0.3), `duration` (extra seconds to sleep).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from zoomtune.common.objectives import MlpDigitsOptions, SvcDigitsOptions, read_options


class Trial(Protocol):
    options: Mapping[str, Any]

    def report(self, step: int, value: float) -> None: ...

    def should_prune(self) -> bool: ...


Split = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]

MLP_PARAMS = frozenset(
    {
        "learning_rate",
        "momentum",
        "beta1",
        "beta2",
        "epsilon",
        "batch_size",
        "hidden_units",
        "layers",
        "lr_schedule",
        "alpha",
        "solver",
        "power_t",
    }
)


@lru_cache(maxsize=4)
def digits_split(seed: int, validation: float) -> Split:
    """Standardised digits, split once per (seed, validation share) and cached per process."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=validation, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def _split(options: SvcDigitsOptions) -> Split:
    if options.duration > 0:
        time.sleep(options.duration)
    return digits_split(options.seed, options.validation)


def mlp_digits(params: Mapping[str, Any], trial: Trial) -> float:
    """An MLPClassifier trained epoch by epoch; reports validation accuracy after each epoch
    and stops when `trial.should_prune()` says so.

    Params (all optional): learning_rate, solver ("sgd" or "adam"; default "sgd" when momentum
    is given, else "adam"), momentum (sgd), beta1, beta2, epsilon (adam), batch_size,
    hidden_units, layers, lr_schedule ("constant", "invscaling", "adaptive"; sgd only),
    power_t (invscaling), alpha (L2). Option `max_iter`: epochs (default 30).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    unknown = sorted(set(params) - MLP_PARAMS)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; expected some of {sorted(MLP_PARAMS)}")
    options = read_options(MlpDigitsOptions, trial.options)
    x_train, x_val, y_train, y_val = _split(options)
    solver = params.get("solver", "sgd" if "momentum" in params else "adam")
    if solver not in ("sgd", "adam"):
        raise ValueError(f"solver must be 'sgd' or 'adam', got solver={solver!r}")
    layers = int(params.get("layers", 1))
    units = int(params.get("hidden_units", 64))
    model = MLPClassifier(
        hidden_layer_sizes=(units,) * layers,
        solver=solver,
        learning_rate_init=float(params.get("learning_rate", 1e-3)),
        momentum=float(params.get("momentum", 0.9)),
        nesterovs_momentum=True,
        beta_1=float(params.get("beta1", 0.9)),
        beta_2=float(params.get("beta2", 0.999)),
        epsilon=float(params.get("epsilon", 1e-8)),
        batch_size=min(int(params.get("batch_size", 64)), len(x_train)),
        learning_rate=str(params.get("lr_schedule", "constant")),
        power_t=float(params.get("power_t", 0.5)),
        alpha=float(params.get("alpha", 1e-4)),
        max_iter=1,
        warm_start=True,
        random_state=options.seed,
    )
    epochs = options.max_iter
    score = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, epochs + 1):
            model.fit(x_train, y_train)
            score = float(model.score(x_val, y_val))
            trial.report(epoch, score)
            if not np.isfinite(model.loss_):
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss {model.loss_})")
            if trial.should_prune():
                break
    return score


def svc_digits(params: Mapping[str, Any], trial: Trial) -> float:
    """An RBF support vector classifier; params C and gamma (sample both on a log scale)."""
    from sklearn.svm import SVC

    x_train, x_val, y_train, y_val = _split(read_options(SvcDigitsOptions, trial.options))
    model = SVC(C=float(params["C"]), gamma=float(params["gamma"]))
    model.fit(x_train, y_train)
    return float(model.score(x_val, y_val))
