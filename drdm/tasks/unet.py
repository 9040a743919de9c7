"""The segmenter of Section 4.1 and its one training loop (Eq. 17, Adam, optional validation).

Used by the one segmentation pipeline, :func:`drdm.tasks.fewshot.run_fewshot` (a fixed step budget per
labelled-set size, the final weights tested; the validation score only records the learning curve).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..network import default_init_, fan_in
from ..seeds import sample_seed

__all__ = ["UNet", "bce_loss", "dice_loss", "memory_format", "predict", "train_segmenter", "parameter_count"]


class UNet(nn.Module):
    """U-Net of Section 4.1 for 2-D or 3-D inputs (one code path).

    ``features[i]`` channels at level ``i``; each block is two 3x3(x3) convolutions
    each followed by ReLU (optionally normalised, ``norm="batch"|"instance"``;
    the paper's U-Net has none; weights use He initialisation, as the original
    U-Net, drawn from ``generator`` when one is given, else from the global RNG);
    max-pooling down and nearest up-sampling by 2, skip connections by concatenation; a 1x1 convolution gives one logit per
    label value (apply a sigmoid for the paper's probabilistic masks). Inputs of
    any size are padded to a multiple of ``2 ** (len(features) - 1)`` and cropped back.
    """

    def __init__(self, ndim: int = 2, in_channels: int = 1, out_channels: int = 4,
                 features: Sequence[int] = (16, 32, 64, 128), norm: str | None = None, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if norm not in (None, "batch", "instance"):
            raise ValueError(f"norm must be None, 'batch' or 'instance', got {norm!r}")
        self.ndim, self.features = ndim, tuple(int(f) for f in features)
        Conv = (nn.Conv2d, nn.Conv3d)[ndim - 2]
        Norm = {None: None, "batch": (nn.BatchNorm2d, nn.BatchNorm3d)[ndim - 2],
                "instance": (nn.InstanceNorm2d, nn.InstanceNorm3d)[ndim - 2]}[norm]

        def block(cin, cout):
            layers = []
            for c in (cin, cout):
                layers.append(Conv(c, cout, 3, padding=1))
                if Norm is not None:
                    layers.append(Norm(cout, affine=True))
                layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        f = self.features
        # with a generator: build with the global RNG left as it was, then replay PyTorch's
        # default draws from the generator, so the He draws below see the same stream
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.down = nn.ModuleList([block(in_channels, f[0])] + [block(f[i - 1], f[i]) for i in range(1, len(f))])
            self.up = nn.ModuleList([block(f[i + 1] + f[i], f[i]) for i in range(len(f) - 1)])
            self.head = Conv(f[0], out_channels, 1)
            self.pool = (nn.MaxPool2d, nn.MaxPool3d)[ndim - 2](2)
        if generator is not None:
            default_init_(self, generator)
        with torch.no_grad():
            for mod in self.modules():                   # He initialisation, as Ronneberger et al.
                if isinstance(mod, Conv):
                    # nn.init.kaiming_normal_(nonlinearity="relu"), with a generator on any torch
                    mod.weight.normal_(0.0, math.sqrt(2.0) / math.sqrt(fan_in(mod.weight)), generator=generator)
                    mod.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S)`` -> logits ``(B, C_out, *S)``."""
        size = x.shape[2:]
        m = 2 ** (len(self.features) - 1)
        pad = []
        for s in reversed(size):
            pad += [0, (-s) % m]
        if any(pad):
            x = F.pad(x, pad)
        skips = []
        for i, blk in enumerate(self.down):
            if i:
                x = self.pool(x)
            x = blk(x)
            skips.append(x)
        for i in range(len(self.up) - 1, -1, -1):
            x = F.interpolate(x, size=skips[i].shape[2:], mode="nearest")
            x = self.up[i](torch.cat([x, skips[i]], 1))
        x = self.head(x)
        if any(pad):
            x = x[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]
        return x


def bce_loss(logits: torch.Tensor, label: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Eq. 17: per-voxel BCE summed over the one-hot channels, averaged over voxels and batch.

    ``logits`` ``(B, C, *S)``; ``label`` ``(B, 1, *S)`` integer in ``[0, C)``.
    """
    onehot = F.one_hot(label[:, 0].long(), n_classes).movedim(-1, 1).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1).mean()


def memory_format(device, ndim: int):
    """The layout a U-Net trains and predicts in: channels-last for 2-D on CPU (oneDNN's
    convolutions run about 1.25x faster so at the few-shot protocol's size, 128^2 batch 8, 2
    threads), else the default one. The same arithmetic: only the summation order may differ."""
    return torch.channels_last if torch.device(device).type == "cpu" and ndim == 2 else torch.contiguous_format


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Label map ``(N, 1, *S)`` int64: the arg-max over the sigmoid channels."""
    model.eval()
    dev = next(model.parameters()).device
    fmt = memory_format(dev, images.dim() - 2)
    out = [model(images[i:i + batch].to(dev).contiguous(memory_format=fmt)).argmax(1, keepdim=True).cpu()
           for i in range(0, images.shape[0], batch)]
    return torch.cat(out)


def dice_loss(logits: torch.Tensor, label: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Soft Dice loss over the foreground channels (``1 - mean Dice``), on the sigmoid outputs.

    ``logits`` ``(B, C, *S)``; ``label`` ``(B, 1, *S)`` integer in ``[0, C)``. Not in the
    paper: a named option of the few-shot protocol (``loss="bce+dice"``).
    """
    onehot = F.one_hot(label[:, 0].long(), n_classes).movedim(-1, 1).to(logits.dtype)[:, 1:]
    prob = torch.sigmoid(logits)[:, 1:]
    dims = (0,) + tuple(range(2, logits.dim()))
    inter = (prob * onehot).sum(dims)
    return 1.0 - ((2 * inter + 1.0) / (prob.sum(dims) + onehot.sum(dims) + 1.0)).mean()


LOSSES = {"bce": bce_loss, "bce+dice": lambda lo, la, c: bce_loss(lo, la, c) + dice_loss(lo, la, c)}


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_segmenter(images: torch.Tensor, labels: torch.Tensor, *, n_classes: int = 4, steps: int = 500,
                    batch: int = 16, lr: float = 1e-3, lr_final: float = 0.1, features=(16, 32, 64, 128),
                    norm: str | None = None, seed: int = 0, device="cpu", loss: str = "bce",
                    validate: Callable[[nn.Module], float] | None = None, eval_every: int = 100,
                    progress: bool = False) -> UNet:
    """Train a :class:`UNet` with Eq. 17 (``loss="bce"``) and Adam.

    The learning rate decays exponentially over ``steps`` (``gamma = lr_final ** (1 / steps)``
    per step, so it would end at ``lr * lr_final``). Batches are drawn uniformly with
    replacement from ``images`` ``(N, C, *S)`` / ``labels`` ``(N, 1, *S)`` by a generator seeded
    with ``sample_seed(seed, "unet-batches")``; the initial weights by one seeded with
    ``sample_seed(seed, "unet-init")`` (:mod:`drdm.seeds`; the global RNG is not used).

    Every run trains for ``steps`` and returns its final weights (no early stopping: the few-shot
    protocol fixes the budget). With ``validate`` (a function of the model in eval mode returning a
    score, higher is better) the score is taken every ``eval_every`` steps and at the last step, to
    record the learning curve: ``model.history`` holds ``step``, ``train_loss`` (mean since the
    previous check), ``val``, ``best_step`` and ``best_val`` (where the curve peaked; not used for
    the weights) and ``steps_run``.
    """
    from ..fit import Every, fit, optimizer_step
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    loss_fn = LOSSES[loss]
    device = torch.device(device)
    fmt = memory_format(device, images.dim() - 2)
    model = UNet(images.dim() - 2, images.shape[1], n_classes, features, norm,
                 generator=torch.Generator().manual_seed(sample_seed(seed, "unet-init"))).to(device, memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_final ** (1.0 / max(steps, 1)))
    g = torch.Generator().manual_seed(sample_seed(seed, "unet-batches"))
    hist = {"step": [], "train_loss": [], "val": [], "best_step": None, "best_val": None, "steps_run": 0}
    state = {"running": []}

    def step(k):
        model.train()
        idx = torch.randint(0, images.shape[0], (min(batch, images.shape[0]),), generator=g)
        x, y = images[idx].to(device).contiguous(memory_format=fmt), labels[idx].to(device)
        value = loss_fn(model(x), y, n_classes)
        optimizer_step(opt, value)
        sched.step()
        state["running"].append(value.detach())           # read at validation: no sync per step
        return {"loss": state["running"][-1]}

    def check(k, _):
        model.eval()
        with torch.no_grad():
            score = float(validate(model))
        hist["step"].append(k)
        hist["train_loss"].append(float(torch.stack(state["running"]).mean()))
        hist["val"].append(score)
        state["running"] = []
        if hist["best_val"] is None or score > hist["best_val"]:
            hist["best_val"], hist["best_step"] = score, k
        return False                                   # never stops early

    hooks = () if validate is None else (Every(eval_every, check),)
    hist["steps_run"] = fit(step, steps, hooks=hooks, progress=progress, desc="train U-Net", postfix="loss")
    model.history = hist
    return model.eval()
