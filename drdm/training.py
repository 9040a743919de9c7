"""Algorithm 1: training the recovery network.

One step: draw images ``I_0``, steps ``t``, the forward pair ``(phi_{t:1}, psi_t)``;
warp ``I_t = phi_{t:1}(I_0)``; predict ``psi_hat = D_theta(I_t, t)`` with K internal
recursions (Eq. 12); minimise Eq. 14 with Adam.

Checkpoints are plain containers of tensors and numbers (model, optimiser,
step, the generator state, the configs), written atomically and read with
``torch.load(weights_only=True)``; resuming continues the same random stream,
so N + N steps equal 2N uninterrupted steps bit for bit on CPU.
Multi-GPU / multi-node: launch with ``torchrun``; each rank draws its own
batch (its own seed stream, :mod:`drdm.seeds`) and DistributedDataParallel averages gradients.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist

from .seeds import sample_seed
from .runner import pick_device
from .checkpoint import FORMAT, CheckpointError, load_checkpoint
from .files import atomic_write
from .diffusion import DiffusionConfig, ForwardProcess
from .fit import Every, fit, optimizer_step
from .losses import drdm_loss
from .network import DRDMNet, NetworkConfig
from . import spatial

__all__ = ["TrainConfig", "Trainer", "train", "save_checkpoint", "augment_batch"]


@dataclass
class TrainConfig:
    """Everything a run needs (saved in every checkpoint and in ``config.json``).

    Attributes:
        ndim, image_size: data geometry (the phantoms are drawn at this size).
        reading: forward process, ``official`` or ``paper``; sigma: its DVF std (None: default);
            unit_factor: official reading's scale (see :class:`DiffusionConfig`); integration: the
            official reading's ``"euler"`` (the release's loop, the default) or ``"squaring"`` (O(log n)
            compositions: in 3-D the Euler loop on the 64^3 control grid takes about 10 s of a
            batch-4 step on one thread, squaring about 1.4 s).
        timesteps: T. variant: network variant. recursion: K.
        batch, lr, steps: Adam with a constant learning rate, as paper and release.
        loss_weights: (lambda_1, lambda_2, lambda_3). loss_coding: ``corrected`` | ``official``.
        augment: random flips and 90-degree rotations of the training images (:func:`augment_batch`).
        n_subjects: phantom subjects to train on (data="phantom").
        seed: one generator drives data, t and the forward process.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``. amp: bfloat16/float16 autocast on CUDA.
        log_every, checkpoint_every: in steps. keep: checkpoints kept on disk.
    """
    ndim: int = 2
    image_size: int = 64
    reading: str = "official"
    sigma: float | None = None
    unit_factor: str | float = "official"
    integration: str = "euler"
    timesteps: int = 80
    variant: str = "official"
    recursion: int = 2
    batch: int = 8
    lr: float = 1e-4
    steps: int = 1000
    loss_weights: tuple = (1.0, 1.0, 10.0)
    loss_coding: str = "corrected"
    augment: bool = True
    data: str = "phantom"
    n_subjects: int = 64
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    log_every: int = 10
    checkpoint_every: int = 200
    keep: int = 2

    def __post_init__(self):
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"steps and batch must be >= 1, got {self.steps}, {self.batch}")
        if self.image_size % 8:
            raise ValueError(f"image_size must be divisible by 8, got {self.image_size}")
        if self.image_size ** self.ndim * self.batch > 2 ** 28:
            raise ValueError(f"image_size {self.image_size}^{self.ndim} x batch {self.batch} is too large "
                             f"to train; use a smaller image_size or batch")
        self.loss_weights = tuple(float(w) for w in self.loss_weights)

    def diffusion(self) -> DiffusionConfig:
        return DiffusionConfig(reading=self.reading, ndim=self.ndim, image_size=self.image_size,
                               timesteps=self.timesteps, sigma=self.sigma, unit_factor=self.unit_factor,
                               integration=self.integration)

    def network(self) -> NetworkConfig:
        return NetworkConfig(ndim=self.ndim, timesteps=self.timesteps, variant=self.variant,
                             recursion=self.recursion)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loss_weights"] = list(self.loss_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {unknown}")
        return cls(**d)


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path, model: torch.nn.Module, config: TrainConfig, *, optimizer=None,
                    step: int = 0, generator: torch.Generator | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (a crash leaves the previous file intact)."""
    net = model.module if hasattr(model, "module") else model
    obj = {"format": FORMAT, "step": int(step), "train_config": config.to_dict(),
           "network_config": net.config.to_dict(),
           "model": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    if generator is not None:
        obj["generator"] = generator.get_state()
    if extra:
        obj["extra"] = extra
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
    return path


# ---------------------------------------------------------------- training

def _phantom_images(cfg: TrainConfig) -> torch.Tensor:
    from .phantoms import cardiac_dataset, thorax_dataset
    if cfg.ndim == 2:
        imgs, _, _ = cardiac_dataset(cfg.n_subjects, cfg.image_size, seed=10_000, phases=("ED", "ES"))
    else:
        imgs, _, _ = thorax_dataset(cfg.n_subjects, cfg.image_size, seed=10_000)
    return imgs


def augment_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training-time augmentation: random flips of every axis and a random transpose of the first two.

    One draw for the whole batch (``nd + 1`` fair coins from ``g``), so a 2-D batch
    goes through one of the 8 symmetries of the square (flips and 90-degree
    rotations). Voxel values are moved, never resampled. This is a subset of
    Section 3.2's augmentation (no free-angle rotation, translation or crop),
    kept as it is because the shipped models were trained with it.

    Args:
        x: ``(B, C, *S)`` with ``S[0] == S[1]`` when a transpose is drawn.
        g: the only source of randomness, on ``x``'s device.

    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> augment_batch(x, torch.Generator().manual_seed(0)).shape
    torch.Size([1, 1, 2, 2])
    """
    nd = x.dim() - 2
    r = torch.randint(0, 2, (nd + 1,), generator=g, device=g.device).tolist()
    for i in range(nd):
        if r[i]:
            x = x.flip(2 + i)
    if r[nd]:
        x = x.transpose(2, 3)
    return x


class Trainer:
    """Runs Algorithm 1; ``Trainer(cfg, out_dir).run()``; resumes from ``out_dir/last.pth`` if present.

    Args:
        config: :class:`TrainConfig`.
        out_dir: folder for ``last.pth``, ``step_XXXXXXX.pth``, ``log.csv``, ``config.json``.
        images: optional ``(N, C, *S)`` float tensor in [0, 1]; default: the embedded phantoms.
    """

    def __init__(self, config: TrainConfig, out_dir, images: torch.Tensor | None = None,
                 progress: bool = True):
        self.cfg = config
        self.out = Path(out_dir)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = pick_device(config.device)
        if self.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.progress = progress and self.rank == 0
        imgs = images if images is not None else _phantom_images(config)
        exp = (config.ndim + 2, config.image_size)
        if imgs.dim() != exp[0] or any(s != config.image_size for s in imgs.shape[2:]):
            raise ValueError(f"images must have shape (N, C, {', '.join([str(config.image_size)] * config.ndim)}); "
                             f"got {tuple(imgs.shape)}")
        self.images = imgs.to(self.device, torch.float32)
        self.fp = ForwardProcess(config.diffusion())
        # initial weights from their own generator (the values global seeding with `seed` gave);
        # training draws from self.gen
        self.model = DRDMNet(config.network(), generator=torch.Generator().manual_seed(config.seed)).to(self.device)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=config.lr)
        # rank 0 draws from the run seed itself; every other rank from its own stream
        self.gen = torch.Generator(self.device).manual_seed(
            config.seed if self.rank == 0 else sample_seed(config.seed, "training-rank", self.rank))
        self.step = 0
        self.amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self._resume()
        self.ddp = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)

    def _resume(self):
        # a run killed mid-write leaves only its temporary file behind: remove it
        for stale in self.out.glob(".*.pth.*.tmp") if self.rank == 0 and self.out.is_dir() else ():
            stale.unlink(missing_ok=True)
        last = self.out / "last.pth"
        if not last.exists():
            return
        ck = load_checkpoint(last)
        if ck["train_config"]["ndim"] != self.cfg.ndim or ck["train_config"]["image_size"] != self.cfg.image_size:
            raise CheckpointError(f"{last}: was trained with ndim={ck['train_config']['ndim']}, "
                                  f"image_size={ck['train_config']['image_size']}; this run asks for "
                                  f"ndim={self.cfg.ndim}, image_size={self.cfg.image_size}")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.step = ck["step"]
        if self.rank == 0:
            self.gen.set_state(ck["generator"])
        else:   # other ranks' streams are not stored: continue on a fresh, distinct stream
            self.gen.manual_seed(sample_seed(self.cfg.seed, "training-rank", self.rank, self.step))

    def train_step(self) -> dict:
        cfg, g = self.cfg, self.gen
        idx = torch.randint(0, self.images.shape[0], (cfg.batch,), generator=g, device=self.device)
        x0 = self.images[idx]
        if cfg.augment:
            x0 = augment_batch(x0, g)
        t = torch.randint(0, self.fp.config.t_max + 1, (cfg.batch,), generator=g, device=self.device)
        s = self.fp.sample(t, g, device=self.device)
        xt = spatial.warp(x0, s.phi)
        self.model.train()
        with torch.autocast(self.device.type, enabled=self.amp):
            pred = self.ddp(xt, t)
        losses = drdm_loss(pred.float(), s.psi, coding=cfg.loss_coding, weights=cfg.loss_weights)
        optimizer_step(self.opt, losses["loss"], self.scaler)
        self.step += 1
        return {k: v.detach() for k, v in losses.items()}

    def save(self):
        if self.rank != 0:
            return
        path = self.out / f"step_{self.step:07d}.pth"
        save_checkpoint(path, self.model, self.cfg, optimizer=self.opt, step=self.step, generator=self.gen)
        atomic_write(self.out / "last.pth", lambda tmp: shutil.copyfile(path, tmp))
        old = sorted(self.out.glob("step_*.pth"))[:-self.cfg.keep] if self.cfg.keep > 0 else []
        for p in old:
            p.unlink(missing_ok=True)

    def run(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` (default ``config.steps``) total steps; returns the log rows."""
        target = steps if steps is not None else self.cfg.steps
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1) + "\n")
        log_path = self.out / "log.csv"
        rows = []
        t0 = time.time()
        start = self.step

        def log(step, r):
            wall = time.time() - t0
            row = {"step": step, **{k: round(v, 6) for k, v in r.items()},
                   "images_per_s": round(self.cfg.batch * self.world * (step - start) / max(wall, 1e-9), 2),
                   "wall_s": round(wall, 2)}
            rows.append(row)
            if self.rank == 0:
                new = not log_path.exists()
                with open(log_path, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow(row)

        fit(lambda _: self.train_step(), target, start=self.step, progress=self.progress, postfix="loss",
            hooks=(Every(self.cfg.log_every, log), Every(self.cfg.checkpoint_every, lambda *_: self.save())))
        return rows


def train(config: TrainConfig, out_dir, images=None, progress: bool = True) -> Trainer:
    """Train (or resume) and return the :class:`Trainer`; initialises torch.distributed under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if pick_device(config.device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
    trainer = Trainer(config, out_dir, images, progress)
    trainer.run()
    return trainer
