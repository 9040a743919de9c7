"""The one optimisation loop of the package.

Every trainer (:class:`drdm.training.Trainer` for Algorithm 1, the segmenter of
:mod:`drdm.tasks.unet`, the registration network's pre-training and fine-tuning in
:mod:`drdm.tasks.registration`) supplies only what differs: a ``step`` function that draws
its batch, computes its loss and calls :func:`optimizer_step`, and periodic :class:`Every`
hooks (log, checkpoint, validate, stop early). :func:`fit` owns the rest: the step counter,
resumption from a step, the progress bar and the non-finite guard.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["Every", "fit", "optimizer_step"]


@dataclass(frozen=True)
class Every:
    """Call ``fn(step, values)`` every ``n`` steps and at the last step.

    ``values`` is the dict the step function returned. A hook that returns ``True``
    stops training after this step (early stopping).
    """
    n: int
    fn: Callable[[int, dict], bool | None]


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, scaler=None) -> None:
    """Zero the gradients, back-propagate ``loss`` and step (through an AMP ``scaler`` if given)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def _floats(values: dict) -> dict:
    return {k: float(v) for k, v in values.items()}


def fit(step: Callable[[int], dict], steps: int, *, start: int = 0, hooks: Sequence[Every] = (),
        progress: bool = False, desc: str = "train", postfix: str | None = None, check_every: int = 50) -> int:
    """Run ``step(k)`` for ``k = start + 1 .. steps``; returns the last step run.

    Args:
        step: one optimisation step; returns a dict of floats or 0-d tensors (``"loss"`` among
            them). Tensors are read (one device synchronisation) only at the steps where a hook
            is due, every ``check_every`` steps and at the last step, so a GPU is not stalled
            every step; there a non-finite value raises ``FloatingPointError`` naming the step.
        steps: the total step count to reach (a resumed run passes its ``start``).
        hooks: :class:`Every` hooks, called in order after the step with the values as floats.
        progress: show a tqdm bar; ``postfix``: a key of the step's dict to show on it (updated
            when the values are read).
        check_every: the longest run of steps between two reads of the values.
    """
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=start, disable=not progress, desc=desc, unit="step", leave=False)
    k = start
    try:
        while k < steps:
            k += 1
            values = step(k)
            due = [h for h in hooks if k % max(h.n, 1) == 0 or k == steps]
            bar.update(1)
            if not due and k % max(check_every, 1) and k != steps:
                continue
            values = _floats(values)
            bad = {name: v for name, v in values.items() if not math.isfinite(v)}
            if bad:
                raise FloatingPointError(f"non-finite loss at step {k}: {bad}")
            if postfix and postfix in values:
                bar.set_postfix({postfix: f"{values[postfix]:.4f}"})
            stop = False
            for h in due:
                stop = bool(h.fn(k, values)) or stop
            if stop:
                break
    finally:
        bar.close()
    return k
