"""The epoch loop both training scripts share: train, evaluate every few epochs, keep
the best state, checkpoint after every epoch, resume exactly where a run stopped, and
stop at a non-finite loss. The scripts keep their own ``train``/``evaluate`` functions;
this module only sequences them."""
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from tqdm import tqdm

from medimg.runfiles import load_training_state, save_training_state


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def training_step(model, x, y, loss_fn, optimizer, scaler, execution):
    """One optimisation step: forward under the run's autocast, the loss in fp32, backward
    (scaled for fp16) and the update. A non-finite loss skips the update, so the weights
    stay those of the last finite step. Returns ``(loss, outputs)``, the loss a detached
    0-d tensor on the device: reading it (``.item()``) is the caller's choice, since on a
    GPU every read makes the host wait for the device.

    With a fused optimizer and an enabled scaler (``Execution.optimizer_options``,
    ``Execution.grad_scaler``: what a GPU run gets) the finiteness check happens on the
    device and the optimizer skips the update there, so the step never waits for the GPU;
    otherwise the loss is read on the host (free on a CPU)."""
    with execution.autocast():
        outputs = model(x)
    loss = loss_fn(outputs.float(), y)
    if (scaler.is_enabled() and getattr(optimizer, "_step_supports_amp_scaling", False)) or torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach(), outputs


def step_maker(model, inputs, targets, loss_fn, wrap=None):
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

    def append(self, **values):
        for key, value in values.items():
            self.setdefault(key, []).append(value)

    def last(self, key):
        return self[key][-1] if self.get(key) else None


@dataclass
class Fit:
    """What ``fit`` returns: the history, the best evaluation's epoch and weights (when
    asked to select one), whether training diverged, and the run's wall time so far."""
    history: History
    best_epoch: Optional[int] = None
    best_state: Optional[dict] = None
    diverged: bool = False
    resumed_at_epoch: Optional[int] = None
    seconds: float = 0.0
    best_score: float = -math.inf


@dataclass
class Loop:
    """The pieces ``fit`` sequences. ``train_epoch(epoch)`` returns ``(loss, score)`` of the
    epoch (a non-finite loss means the run diverged); ``evaluate()`` returns a dict of
    history entries (``valid_losses``, ``valid_accs``, ...); ``score_key`` names the entry
    that selects the best epoch when ``select_best``."""
    model: object
    optimizer: object
    train_epoch: Callable
    evaluate: Callable
    epochs: int
    checkpoint_path: object
    shuffle_rng: object
    scheduler: object = None
    scaler: object = None
    eval_every: int = 1
    select_best: bool = False
    score_key: str = "valid_accs"
    parts: dict = field(init=False)

    def __post_init__(self):
        self.parts = {name: part for name, part in (("model", self.model), ("optimizer", self.optimizer),
                                                    ("scaler", self.scaler), ("scheduler", self.scheduler))
                      if part is not None}


def fit(loop: Loop, resume=False):
    result = Fit(History())
    start_epoch = 0
    if resume and loop.checkpoint_path.exists():
        state = load_training_state(loop.checkpoint_path, loop.parts, loop.shuffle_rng)
        result.history = History(state["history"])
        best = state["best"]
        result.best_epoch, result.best_state, result.best_score = best["epoch"], best["state"], best["score"]
        start_epoch = result.resumed_at_epoch = state["epoch"] + 1
        print(f"Resuming {loop.checkpoint_path.parent} at epoch {start_epoch}")
    history = result.history
    prior_seconds = sum(history.get("train_times", [])) + sum(history.get("valid_times", []))
    wall_start = time.perf_counter()

    for epoch in tqdm(range(start_epoch, loop.epochs), desc="epochs", initial=start_epoch, total=loop.epochs,
                      dynamic_ncols=True):
        learning_rate = loop.optimizer.param_groups[0]["lr"]
        with Timer() as timer:
            loss, score = loop.train_epoch(epoch)
        if not math.isfinite(loss):
            tqdm.write(f"Non-finite loss at epoch {epoch}: the run diverged; stopping (lr {learning_rate})")
            result.diverged = True
            break
        history.append(train_losses=loss, train_accs=score, train_times=timer.seconds, learning_rates=learning_rate)
        if loop.scheduler is not None:
            loop.scheduler.step()

        if (epoch + 1) % loop.eval_every == 0 or epoch + 1 == loop.epochs:
            with Timer() as eval_timer:
                metrics = loop.evaluate()
            history.append(evaluated_epochs=epoch + 1, valid_times=eval_timer.seconds, **metrics)
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            tqdm.write(f"=== Epoch {epoch}: train loss {loss:.4f} acc {score:.4f} | {shown} "
                       f"({timer.seconds:.0f}+{eval_timer.seconds:.0f} s)")
            if loop.select_best and metrics[loop.score_key] > result.best_score:
                result.best_epoch, result.best_score = epoch + 1, metrics[loop.score_key]
                result.best_state = copy.deepcopy(loop.model.state_dict())
        if epoch + 1 < loop.epochs:
            save_training_state(loop.checkpoint_path, loop.parts, loop.shuffle_rng, history=dict(history),
                                epoch=epoch, best={"epoch": result.best_epoch, "state": result.best_state,
                                                   "score": result.best_score})
    result.seconds = prior_seconds + time.perf_counter() - wall_start
    return result
