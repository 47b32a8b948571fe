"""What both training scripts share around their epoch loop: the training step, the
per-epoch history, and ``Progress``, the bookkeeping that lets an interrupted run resume
exactly (epochs done, best evaluation, checkpoint). The loop itself is written out in each
script's ``main``."""
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from medimg.execution import Execution
from medimg.runfiles import load_training_state, save_training_state

# A training step's parts: a module, an optimizer, a GradScaler, an LR scheduler: anything
# with ``state_dict()`` and ``load_state_dict()``, checkpointed under its name.
Parts = dict


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``: the block's wall time."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def skips_non_finite_steps_on_device(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """Whether ``scaler.step(optimizer)`` itself skips an update whose gradients are not
    finite, without the host reading anything: true for an optimizer built with
    ``fused=True`` (what ``Execution.optimizer_options`` gives a GPU run) stepped through an
    enabled scaler (``Execution.grad_scaler`` on a GPU), whose found-inf flag the fused
    kernel reads on the device."""
    return scaler.is_enabled() and bool(optimizer.defaults.get("fused"))


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, optimizer:
                  torch.optim.Optimizer, scaler: torch.amp.GradScaler, execution: Execution):
    """One optimisation step: forward under the run's autocast, the loss in fp32, backward
    (scaled for fp16) and the update. A non-finite loss skips the update, so the weights
    stay those of the last finite step. Returns ``(loss, outputs)``, the loss a detached
    0-d tensor on the device: reading it (``.item()``) is the caller's choice, since on a
    GPU every read makes the host wait for the device.

    Who skips a non-finite step: the device, when the optimizer and scaler can
    (``skips_non_finite_steps_on_device``: a GPU run never waits for its loss); otherwise
    the host, by reading the loss (free on a CPU)."""
    with execution.autocast():
        outputs = model(x)
    loss = loss_fn(outputs.float(), y)
    if skips_non_finite_steps_on_device(optimizer, scaler) or torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach(), outputs


def step_maker(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: Callable,
               wrap: Optional[Callable[[nn.Module], nn.Module]] = None) -> Callable[[Execution], Callable]:
    """For ``execution.choose``: ``make_step(execution)`` returns a function that runs one
    training step on a copy of ``model`` (so the run's own weights are never touched) with
    the given sample batch; ``wrap`` turns the copy into what the loss sees."""
    def make_step(execution):
        net = execution.prepare(copy.deepcopy(model))
        forward = wrap(net) if wrap else net
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6, **execution.optimizer_options())
        x, y, scaler = execution.to_input(inputs), targets.to(execution.device), execution.grad_scaler()
        return lambda: training_step(forward, x, y, loss_fn, optimizer, scaler, execution)
    return make_step


class History(dict):
    """Named per-epoch lists: ``train_losses``, ``train_accs``, ``train_times``,
    ``learning_rates`` (one value per trained epoch), ``evaluated_epochs``,
    ``valid_times`` and whatever the evaluation returns (one value per evaluation)."""

    def append(self, **values: float) -> None:
        for key, value in values.items():
            self.setdefault(key, []).append(value)


@dataclass
class Progress:
    """Where a run stands: its history, how many epochs it has trained, the best evaluation
    so far (when the run selects one), and whether it diverged. ``save`` checkpoints it with
    the training parts and the random streams after an epoch; ``load`` brings all of it back,
    so a resumed run computes the same numbers, bit for bit, as one that never stopped."""
    history: History = field(default_factory=History)
    epochs_done: int = 0                 # also the (0-based) index of the next epoch to train
    best_epoch: Optional[int] = None     # 1-based, like history["evaluated_epochs"]
    best_score: float = -math.inf
    best_state: Optional[dict] = None    # a copy of the model's weights at best_epoch
    diverged: bool = False
    resumed_at_epoch: Optional[int] = None
    earlier_seconds: float = 0.0         # the epochs' time in the processes before a resume
    code: Optional[str] = None           # the fingerprint of the code that trains it (runfiles.code_fingerprint)
    started: float = field(default_factory=time.perf_counter, repr=False)

    def update_best(self, epoch: int, score: float, model: nn.Module) -> bool:
        """Keep a copy of ``model``'s weights when ``score`` beats the best so far."""
        if score <= self.best_score:
            return False
        self.best_epoch, self.best_score = epoch, score
        self.best_state = copy.deepcopy(model.state_dict())
        return True

    def seconds(self) -> float:
        """Wall time of the epochs so far, this process's and those before a resume."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def save(self, path: Path, parts: Parts, shuffle_rng: torch.Generator) -> None:
        """Checkpoint the progress, the state of every part that is not None, and the random streams."""
        # "epoch" is the last epoch done, 0-based, as in checkpoints written before Progress existed
        save_training_state(path, _present(parts), shuffle_rng, history=dict(self.history),
                            epoch=self.epochs_done - 1, code=self.code,
                            best={"epoch": self.best_epoch, "state": self.best_state, "score": self.best_score})

    @classmethod
    def load(cls, path: Path, parts: Parts, shuffle_rng: torch.Generator, code: str) -> "Progress":
        """Restore the parts and random streams that ``save`` wrote; the progress to continue from.
        ``code``: this process's code fingerprint (SHA-256), which must be the one that trained the
        epochs so far (``runfiles.check_resumable`` says so before anything is touched)."""
        state = load_training_state(path, _present(parts), shuffle_rng)
        assert state.get("code") == code, f"{path}: trained by other code (runfiles.check_resumable first)"
        history, best = History(state["history"]), state["best"]
        done = state["epoch"] + 1
        print(f"Resuming {path.parent} at epoch {done}")
        return cls(history, done, best["epoch"], best["score"], best["state"], resumed_at_epoch=done,
                   earlier_seconds=sum(history.get("train_times", [])) + sum(history.get("valid_times", [])),
                   code=code)


def _present(parts: Parts) -> Parts:
    return {name: part for name, part in parts.items() if part is not None}


def epoch_summary(epoch: int, loss: float, score: float, metrics: dict, train_seconds: float,
                  eval_seconds: float) -> str:
    """The console line of an evaluated epoch."""
    shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return (f"=== Epoch {epoch}: train loss {loss:.4f} acc {score:.4f} | {shown} "
            f"({train_seconds:.0f}+{eval_seconds:.0f} s)")
