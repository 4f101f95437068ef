"""A PyTorch MLP on scikit-learn's digits: the built-in `torch-mlp-digits` objective.

It trains on the GPU its worker slot is pinned to (`worker start --gpus ...` sets
`CUDA_VISIBLE_DEVICES` to one GPU, which PyTorch then calls `cuda:0`), and on the CPU in a CPU
slot. PyTorch is an optional extra (`pip install 'zoomtune[torch]'`): it is imported only when
a trial runs, so the coordinator and CPU workers never need it.

Params (all optional):

| name          | meaning                                                    | default |
|---------------|------------------------------------------------------------|---------|
| learning_rate | initial step size (sample on a log scale)                  | 1e-3    |
| optimizer     | "adam" or "sgd" (default "sgd" when momentum is given)     | adam    |
| beta1, beta2  | Adam's moment decay rates (sample as 1 - beta, reverse_log)| 0.9, 0.999 |
| epsilon       | Adam's epsilon                                             | 1e-8    |
| momentum      | SGD's (Nesterov) momentum                                  | 0.9     |
| batch_size    | examples per step                                          | 64      |
| hidden_units  | units per hidden layer                                     | 64      |
| layers        | hidden layers                                              | 1       |
| lr_decay      | learning rate at epoch e is learning_rate / (1 + lr_decay * e) | 0   |
| weight_decay  | L2 penalty                                                 | 0       |

Options: `epochs` (default 20), `seed` (default 0), `validation` (held-out share, default 0.3),
`threads` (PyTorch threads of a CPU trial, default 1: a CPU slot runs one trial per core).
Returns the validation accuracy after the last epoch (maximise); reports it every epoch, and
stops early when `trial.should_prune()` says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from zoomtune.common.objectives import TorchDigitsOptions, read_options
from zoomtune.workers.objectives.digits import digits_split


class Trial(Protocol):
    options: Mapping[str, Any]
    device: str

    def report(self, step: int, value: float) -> None: ...

    def should_prune(self) -> bool: ...


TORCH_PARAMS = frozenset(
    {
        "learning_rate",
        "optimizer",
        "beta1",
        "beta2",
        "epsilon",
        "momentum",
        "batch_size",
        "hidden_units",
        "layers",
        "lr_decay",
        "weight_decay",
    }
)

INSTALL_HINT = (
    "the objective 'torch-mlp-digits' needs PyTorch, which this worker lacks: "
    "pip install 'zoomtune[torch]' on the worker (or a CPU build: pip install torch "
    "--index-url https://download.pytorch.org/whl/cpu)"
)


def torch_mlp_digits(params: Mapping[str, Any], trial: Trial) -> float:
    """Train the MLP epoch by epoch on the slot's device, reporting the validation accuracy
    after each and stopping when `trial.should_prune()` says so; the last accuracy."""
    try:
        import torch
    except ImportError as exc:
        raise ModuleNotFoundError(INSTALL_HINT) from exc

    unknown = sorted(set(params) - TORCH_PARAMS)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; expected some of {sorted(TORCH_PARAMS)}")
    options = read_options(TorchDigitsOptions, trial.options)
    seed = options.seed
    device = _device(torch, trial)
    if device.type == "cpu":
        torch.set_num_threads(options.threads)
    torch.manual_seed(seed)

    x_train, x_val, y_train, y_val = digits_split(seed, options.validation)
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y_train, dtype=torch.long, device=device)
    xv = torch.as_tensor(x_val, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_val, dtype=torch.long, device=device)

    units, layers = int(params.get("hidden_units", 64)), int(params.get("layers", 1))
    modules: list[Any] = []
    width = xt.shape[1]
    for _ in range(layers):
        modules += [torch.nn.Linear(width, units), torch.nn.ReLU()]
        width = units
    modules.append(torch.nn.Linear(width, 10))
    model = torch.nn.Sequential(*modules).to(device)

    optimizer = _optimizer(torch, model, params)
    decay = float(params.get("lr_decay", 0.0))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 / (1 + decay * epoch))
    batch_size = min(int(params.get("batch_size", 64)), len(xt))
    shuffle = torch.Generator(device="cpu").manual_seed(seed)
    loss_function = torch.nn.CrossEntropyLoss()

    accuracy = 0.0
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = torch.randperm(len(xt), generator=shuffle).to(device)
        for start in range(0, len(xt), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_function(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
        schedule.step()
        last_loss = float(loss.item())
        if not math.isfinite(last_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {last_loss})")
        model.eval()
        with torch.no_grad():
            accuracy = float((model(xv).argmax(dim=1) == yv).float().mean())
        trial.report(epoch, accuracy)
        if trial.should_prune():
            break
    return accuracy


def _device(torch: Any, trial: Trial) -> Any:
    """`cuda` (the one GPU the slot sees) in a GPU slot, else the CPU.

    A GPU slot where PyTorch sees no GPU fails the trial rather than train quietly on the CPU:
    that is a CPU-only torch build or a missing driver, and the study asked for a GPU.
    """
    if not trial.device.startswith("gpu"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"this trial runs in GPU slot {trial.device}, but PyTorch {torch.__version__} sees "
            "no GPU (a CPU-only build, or no NVIDIA driver)"
        )
    return torch.device("cuda")


def _optimizer(torch: Any, model: Any, params: Mapping[str, Any]) -> Any:
    kind = str(params.get("optimizer", "sgd" if "momentum" in params else "adam"))
    learning_rate = float(params.get("learning_rate", 1e-3))
    weight_decay = float(params.get("weight_decay", 0.0))
    if kind == "adam":
        return torch.optim.Adam(
            model.parameters(),
            lr=learning_rate,
            betas=(float(params.get("beta1", 0.9)), float(params.get("beta2", 0.999))),
            eps=float(params.get("epsilon", 1e-8)),
            weight_decay=weight_decay,
        )
    if kind == "sgd":
        momentum = float(params.get("momentum", 0.9))
        return torch.optim.SGD(
            model.parameters(),
            lr=learning_rate,
            momentum=momentum,
            nesterov=momentum > 0,
            weight_decay=weight_decay,
        )
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {kind!r}")
