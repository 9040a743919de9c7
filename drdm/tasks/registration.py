"""Synthetic pre-training of a registration network (Section 5, Table 3).

A small VoxelMorph-style U-Net (Balakrishnan et al. 2019: strided 3x3(x3)
convolutions with LeakyReLU 0.2, encoder 16-32-32-32, decoder 32-32-32-32 with
skip connections, two 16-channel convolutions and a flow layer initialised near
zero) maps ``(moving, fixed)`` to a dense displacement ``u`` in voxels such that
``warp(moving, u)`` (:func:`drdm.spatial.warp`, pull-back) matches ``fixed``.
The network predicts the displacement directly (the "vanilla", non-diffeomorphic
VoxelMorph), so folding is possible and is reported.

Training:

* synthetic pre-training (Eq. 20): pairs ``(I_mv, I_fx, phi)`` from Algorithm 4
  (:func:`drdm.sampling.registration_pairs`, ``"drdm"``) or from random
  multi-resolution B-splines in the same scheme (``"mrbs"``,
  :func:`drdm.baselines.mrbs_field`: ``I_mv = phi_aug(I_0)``,
  ``I_fx = <phi o phi_aug>(I_0)``); loss ``lambda_4 mean|phi - phi_hat|^2 +
  lambda_5 mean|grad phi_hat|_1`` (1, 1), Adam.
* unsupervised fine-tuning on real inter-subject pairs (VoxelMorph): image MSE
  plus ``lambda mean|grad phi_hat|^2`` (``lambda = 0.01``, VoxelMorph's choice with MSE).

Evaluation (:func:`run_registration`): inter-subject pairs of test subjects;
the moving label map is warped with the label-safe warp and compared with the
fixed one per structure (Dice, ASD and HD in voxels; an empty structure's
infinite distance counts as the image diagonal), averaged over structures; and
the fraction of voxels with a negative Jacobian determinant of the predicted
field (per mille, Table 3). ``("none", False)`` is no registration (identity field).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics, spatial
from ..fit import fit, optimizer_step
from ..phantoms import phantom_records
from ..seeds import sample_seed
from ..stats import compare_sentence, finite, fmt, fmt_p, paired_difference, summary, wilcoxon
from ._common import Experiment, fit_size, log, num_threads, split_subjects, to_tensors
from .voxelmorph import VoxelMorph, gradient_l1, gradient_l2

__all__ = ["VoxelMorph", "RegProfile", "PROFILES", "SYNTHESIS", "gradient_l1", "gradient_l2",
           "synthetic_pairs", "pretrain", "finetune_unsupervised", "register", "run_registration", "table3_markdown",
           "verdict", "still_rows"]

SYNTHESIS = ("none", "mrbs", "drdm")
SYNTH_NAMES = {"none": "N/A", "mrbs": "MRBS", "drdm": "DRDM"}


# ---------------------------------------------------------------- profiles

@dataclass(frozen=True)
class RegProfile:
    """Sizes of one run.

    Attributes:
        size: image side (2-D cardiac slices or 3-D thorax volumes).
        n_subjects: phantom subjects; test_fraction: their share in the test set
            (paper: 20 training, 10 test CT scans). split_seed: the subject split.
        n_synth: synthetic pairs per training image (paper: 32).
        mrbs_levels: MRBS control-point spacings as fractions of the side;
        mrbs_magnitudes: per-level amplitude as a fraction of that level's spacing.
        drdm_pairs: ``(T'_aug, T'_syn)`` levels for Algorithm 4 (cycled over the copies).
        pretrain_steps, finetune_steps, batch, lr: optimisation (paper: Adam 1e-4, batch 12;
            short profiles use 1e-3). grad_weight: lambda_5 (Eq. 20). smooth_weight: fine-tuning lambda.
        max_test_pairs: ordered inter-subject test pairs evaluated (all if fewer).
        enc, dec, extra: :class:`VoxelMorph` widths (VoxelMorph's defaults; narrower for 3-D on CPU).
        seeds: default seeds. threads: torch intra-op threads (None: as is).
    """
    size: int = 32
    n_subjects: int = 12
    test_fraction: float = 1 / 3
    split_seed: int = 0
    n_synth: int = 4
    mrbs_levels: tuple = (1 / 2, 1 / 4, 1 / 8)
    mrbs_magnitudes: tuple = (0.25, 0.15, 0.05)
    drdm_pairs: tuple = ((10, 10),)
    pretrain_steps: int = 150
    finetune_steps: int = 100
    batch: int = 8
    lr: float = 1e-3
    grad_weight: float = 1.0
    smooth_weight: float = 0.01
    max_test_pairs: int = 12
    enc: tuple = (16, 32, 32, 32)
    dec: tuple = (32, 32, 32, 32)
    extra: tuple = (16, 16)
    seeds: tuple = (0,)
    threads: int | None = 1


PROFILES = {
    "ci": RegProfile(),
    "cpu": RegProfile(size=64, n_subjects=30, n_synth=16, drdm_pairs=((10, 10), (20, 20)), pretrain_steps=1500,
                      finetune_steps=800, batch=8, max_test_pairs=90, threads=None),
    "gpu": RegProfile(size=128, n_subjects=30, n_synth=32, drdm_pairs=((20, 20), (30, 30), (40, 40)),
                      pretrain_steps=20000, finetune_steps=10000, batch=12, lr=1e-4, max_test_pairs=90,
                      seeds=(0, 1, 2), threads=None),
}
#: 3-D thorax profiles (used when ``data="thorax3d"``): smaller volumes on CPU
PROFILES_3D = {
    "ci": RegProfile(size=24, n_subjects=6, test_fraction=1 / 3, n_synth=1, drdm_pairs=((5, 5),), pretrain_steps=30,
                     finetune_steps=20, batch=2, max_test_pairs=2, enc=(8, 16, 16), dec=(16, 16, 16), extra=(8, 8)),
    "cpu": RegProfile(size=48, n_subjects=15, n_synth=8, drdm_pairs=((10, 10), (20, 20)), pretrain_steps=600,
                      finetune_steps=300, batch=2, max_test_pairs=20, enc=(16, 32, 32), dec=(32, 32, 32),
                      threads=None),
    "gpu": PROFILES["gpu"],
}


# ---------------------------------------------------------------- synthetic pairs and training

def _mrbs(shape, g, prof: RegProfile, n: int, dtype, device):
    side = sum(shape) / len(shape)
    levels = [max(2.0, f * side) for f in prof.mrbs_levels]
    mags = [m * s for m, s in zip(prof.mrbs_magnitudes, levels)]
    from ..baselines import mrbs_field
    return mrbs_field(shape, g, levels, mags, batch=n, dtype=dtype, device=device)


@torch.no_grad()
def synthetic_pairs(method: str, images: torch.Tensor, n: int, seed: int, prof: RegProfile, *,
                    net=None, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(moving, fixed, ddf)``, ``n`` per image, Algorithm 4's scheme.

    ``warp(moving, ddf)`` equals ``fixed`` up to interpolation: ``ddf`` is the
    target of Eq. 20 in the pull-back convention. DRDM pairs go through each image's
    :class:`drdm.grid.InputGrid` to the network's training grid and back
    (:func:`drdm.sampling.registration_pairs`, as ``drdm synth``); copy ``k`` of image ``i``
    uses the level pair ``(i * n + k) mod len(drdm_pairs)`` (cycled over the copies and the images) and the seed ``sample_seed(seed, "field", T'_aug, T'_syn, i, k)`` (``drdm synth``'s convention).
    """
    g = torch.Generator().manual_seed(seed)
    mv, fx, dd = [], [], []
    for i in range(images.shape[0]):
        img = images[i:i + 1]
        if method == "mrbs":
            shape = tuple(img.shape[2:])
            aug = _mrbs(shape, g, prof, n, img.dtype, img.device)
            syn = _mrbs(shape, g, prof, n, img.dtype, img.device)
            src = img.expand(n, *img.shape[1:])
            mv.append(spatial.warp(src, aug))
            fx.append(spatial.warp(src, spatial.compose(syn, aug)))
            dd.append(syn)
        elif method == "drdm":
            from ..grid import InputGrid
            from ..sampling import apply_field, network_input, registration_pairs
            grid = InputGrid.of(net, img.shape[2:])
            x = network_input(net, grid, img[0, 0].cpu().numpy(), device)
            src = img.to(device)
            L = len(prof.drdm_pairs)
            for j, pair in enumerate(prof.drdm_pairs):           # copies of one level pair as one batch
                idx = [k for k in range(n) if (i * n + k) % L == j]
                if not idx:
                    continue
                r = registration_pairs(net, grid, None, tuple(pair), [sample_seed(seed, "field", *pair, i, k) for k in idx],
                                       network_image=x)
                many = src.expand(len(idx), *src.shape[1:])
                mv.append(apply_field(net, many, r["aug"])[0].cpu())
                fx.append(apply_field(net, many, r["both"])[0].cpu())
                dd.append(r["syn"].cpu())
        else:
            raise ValueError(f"synthesis must be 'mrbs' or 'drdm', got {method!r}")
    return torch.cat(mv), torch.cat(fx), torch.cat(dd)


def _model(ndim: int, seed: int, device, prof: RegProfile) -> VoxelMorph:
    return VoxelMorph(ndim, 1, prof.enc, prof.dec, prof.extra, generator=torch.Generator().manual_seed(sample_seed(seed, "registration-init"))).to(device)


def pretrain(model: VoxelMorph, moving, fixed, ddf, *, steps: int, batch: int, lr: float,
             grad_weight: float = 1.0, seed: int = 0) -> VoxelMorph:
    """Eq. 20 (supervised on synthetic fields): ``mean|phi - phi_hat|^2 + grad_weight * mean|grad phi_hat|_1``."""
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(sample_seed(seed, "registration-batches", "pretrain"))
    model.train()

    def step(_):
        idx = torch.randint(0, moving.shape[0], (min(batch, moving.shape[0]),), generator=g)
        pred = model(moving[idx].to(dev), fixed[idx].to(dev))
        loss = F.mse_loss(pred, ddf[idx].to(dev)) + grad_weight * gradient_l1(pred)
        optimizer_step(opt, loss)
        return {"loss": loss.detach()}

    fit(step, steps, desc="pre-train VoxelMorph")
    return model.eval()


def finetune_unsupervised(model: VoxelMorph, images: torch.Tensor, subjects: Sequence[str], *, steps: int, batch: int,
             lr: float, smooth_weight: float = 0.01, seed: int = 0, pairs=None) -> VoxelMorph:
    """Unsupervised VoxelMorph training on random pairs of ``images``:
    ``mean|warp(moving, phi_hat) - fixed|^2 + smooth_weight * mean|grad phi_hat|^2``.

    ``pairs``: ``(moving index, fixed index)`` to draw from (e.g. one subject's ED and ES frames);
    default every inter-subject pair."""
    if pairs is None:
        pairs = [(i, j) for i, j in itertools.permutations(range(images.shape[0]), 2) if subjects[i] != subjects[j]]
    if not pairs:
        raise ValueError("fine-tuning needs images of at least two subjects")
    pairs = torch.tensor(pairs)
    dev = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(sample_seed(seed, "registration-batches", "finetune"))
    model.train()

    def step(_):
        p = pairs[torch.randint(0, len(pairs), (min(batch, len(pairs)),), generator=g)]
        mv, fx = images[p[:, 0]].to(dev), images[p[:, 1]].to(dev)
        u = model(mv, fx)
        loss = F.mse_loss(spatial.warp(mv, u), fx) + smooth_weight * gradient_l2(u)
        optimizer_step(opt, loss)
        return {"loss": loss.detach()}

    fit(step, steps, desc="fine-tune VoxelMorph")
    return model.eval()


@torch.no_grad()
def register(model: VoxelMorph | None, moving: torch.Tensor, fixed: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Predicted fields ``(N, ndim, *S)`` (CPU); ``model=None`` gives the identity (zeros)."""
    if model is None:
        return torch.zeros(moving.shape[0], moving.dim() - 2, *moving.shape[2:], dtype=moving.dtype)
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(moving[i:i + batch].to(dev), fixed[i:i + batch].to(dev)).cpu()
                      for i in range(0, moving.shape[0], batch)])


# ---------------------------------------------------------------- evaluation

def _evaluate(ddf, mv_lab, fx_lab, labels, identity: bool) -> dict[str, np.ndarray]:
    warped = spatial.warp(mv_lab, ddf, mode="label")
    diag = math.sqrt(sum(s ** 2 for s in fx_lab.shape[2:]))
    n = ddf.shape[0]
    out = {"dice": np.zeros(n), "asd": np.zeros(n), "hd": np.zeros(n)}
    for i in range(n):
        rows = metrics.label_metrics(warped[i, 0].numpy(), fx_lab[i, 0].numpy(), labels)
        out["dice"][i] = np.mean([rows[v]["dice"] for v in labels])
        out["asd"][i] = np.mean(finite([rows[v]["asd"] for v in labels], diag))
        out["hd"][i] = np.mean(finite([rows[v]["hd"] for v in labels], diag))
    out["negj"] = (np.full(n, np.nan) if identity else 10.0 * metrics.negative_jacobian_pct(ddf).numpy())
    out["disp"] = ddf.double().norm(dim=1).flatten(1).mean(1).numpy()      # mean |u|, voxels
    return out


def _records(data, prof: RegProfile):
    if isinstance(data, str):
        if data == "phantom2d":
            return phantom_records("cardiac", prof.n_subjects, prof.size, seed=2000, phases=("ED",)), 2
        if data == "thorax3d":
            return phantom_records("thorax", prof.n_subjects, prof.size, seed=3000), 3
        raise ValueError(f"data must be 'phantom2d', 'thorax3d' or a list of drdm.data.Record, got {data!r}")
    records = list(data)
    if not records:
        raise ValueError("no records given")
    ndims = {r.image.ndim for r in records}
    if len(ndims) != 1:
        raise ValueError(f"records mix 2-D and 3-D images: {sorted(ndims)}")
    return fit_size(records, prof.size), ndims.pop()


def run_registration(profile: str = "ci", data="phantom2d", synthesis: Sequence[str] = SYNTHESIS,
                     finetune: Sequence[bool] = (False, True), seeds: Sequence[int] | None = None,
                     drdm_checkpoint=None, out_dir=None, device: str = "auto", **overrides) -> dict:
    """Table 3 on phantoms or records.

    Args:
        profile: ``"ci"`` | ``"cpu"`` | ``"gpu"``; :data:`PROFILES` for 2-D data,
            :data:`PROFILES_3D` for ``"thorax3d"``; ``overrides`` replace :class:`RegProfile` fields.
        data: ``"phantom2d"`` (inter-subject 2-D cardiac slices, labels RV/myo/LV),
            ``"thorax3d"`` (3-D thorax phantoms, two lung masks), or a list of
            :class:`drdm.data.Record` with label maps (preprocessed to ``size``).
        synthesis: subset of :data:`SYNTHESIS`; ``"drdm"`` needs a checkpoint of the
            data's dimension (the argument, a path or shipped name, else the shipped model of that
            dimension: :func:`drdm.checkpoint.resolve`) and is skipped with a logged reason when
            there is none.
        finetune: which of "no fine-tuning" / "unsupervised fine-tuning on real pairs" to run.
        seeds: network init, batches and synthetic draws.
        out_dir: if given, ``<out_dir>/<profile>/registration.json`` (+ provenance) and ``.md``.

    Returns:
        JSON-serialisable dict: ``config``, ``split``, ``skipped``, ``rows`` (one per
        (synthesis, fine-tuning): DSC, ASD, HD, |J|<0 in per mille with mean/std/n,
        per-pair DSC and ASD), ``wilcoxon``, ``markdown`` (Table 3 layout), ``wall_time_s``.
    """
    from ..faults import guard
    with guard("the registration run (it writes its record only at the end)"):
        return _run_registration(profile, data, synthesis, finetune, seeds, drdm_checkpoint, out_dir, device,
                                 **overrides)


def _run_registration(profile, data, synthesis, finetune, seeds, drdm_checkpoint, out_dir, device, **overrides):
    exp = Experiment("registration", PROFILES_3D if data == "thorax3d" else PROFILES, profile, overrides, seeds,
                     synthesis, SYNTHESIS, device)
    prof, seeds, synthesis, dev = exp.prof, exp.seeds, exp.methods, exp.device
    finetune_opts = tuple(bool(f) for f in finetune)
    with num_threads(prof.threads):
        records, ndim = _records(data, prof)
        train, test = split_subjects(records, prof.test_fraction, prof.split_seed)
        tr_img, _ = to_tensors(train)
        te_img, te_lab = to_tensors(test)
        tr_subj, te_subj = [r.subject for r in train], [r.subject for r in test]
        labels = sorted(int(v) for v in torch.unique(te_lab).tolist() if v != 0)
        pairs = [(i, j) for i, j in itertools.permutations(range(len(test)), 2) if te_subj[i] != te_subj[j]]
        if not pairs:
            raise ValueError("evaluation needs test images of at least two subjects")
        rng = np.random.default_rng(prof.split_seed)
        if len(pairs) > prof.max_test_pairs:
            pairs = [pairs[k] for k in sorted(rng.choice(len(pairs), prof.max_test_pairs, replace=False))]
        mv_i = torch.tensor([p[0] for p in pairs])
        fx_i = torch.tensor([p[1] for p in pairs])
        moving, fixed, mv_lab, fx_lab = te_img[mv_i], te_img[fx_i], te_lab[mv_i], te_lab[fx_i]

        net = exp.load_drdm(drdm_checkpoint, ndim, [t for p in prof.drdm_pairs for t in p])

        rows, pretrained = {}, {}
        for synth in synthesis:
            if synth in exp.skipped:
                continue
            for ft in finetune_opts:
                runs = []
                for seed in seeds:
                    if synth == "none" and not ft:
                        model = None                     # no registration: the identity field
                    else:
                        model = _model(ndim, seed, dev, prof)
                        if synth != "none":
                            if (synth, seed) not in pretrained:      # shared by both fine-tuning rows
                                m, f, d = synthetic_pairs(synth, tr_img, prof.n_synth, sample_seed(seed, "synthetic-pairs"), prof,
                                                          net=net, device=dev)
                                pretrain(model, m, f, d, steps=prof.pretrain_steps, batch=prof.batch, lr=prof.lr,
                                         grad_weight=prof.grad_weight, seed=seed)
                                pretrained[(synth, seed)] = {k: v.clone() for k, v in model.state_dict().items()}
                            model.load_state_dict(pretrained[(synth, seed)])
                        if ft:
                            finetune_unsupervised(model, tr_img, tr_subj, steps=prof.finetune_steps, batch=prof.batch,
                                     lr=prof.lr, smooth_weight=prof.smooth_weight, seed=seed)
                    ddf = register(model, moving, fixed)
                    runs.append(_evaluate(ddf, mv_lab, fx_lab, labels, model is None))
                    if model is None:
                        break                            # deterministic: one run is enough
                per_pair = {k: np.mean([r[k] for r in runs], 0) for k in runs[0]}
                key = _key(synth, ft)
                rows[key] = {"synthesis": synth, "finetune": ft, "per_pair": per_pair}
                log.info("registration %s: DSC %.3f", key, per_pair["dice"].mean())
    return exp.finish(data, {
        "ndim": ndim, "labels": labels,
        "split": {"train_subjects": sorted(set(tr_subj)), "test_subjects": sorted(set(te_subj)),
                  "n_test_pairs": len(pairs)},
        "rows": {k: _row_summary(v) for k, v in rows.items()},
        "wilcoxon": _tests(rows),
        # DSC difference over test pairs, bootstrap 95 % CI (fractions, not %)
        "dice_difference": {f"{_key(a, ft)} vs {_key(b, ft)}": paired_difference(rows[_key(a, ft)]["per_pair"]["dice"],
                                                                                  rows[_key(b, ft)]["per_pair"]["dice"])
                            for a, b in (("drdm", "mrbs"), ("drdm", "none"), ("mrbs", "none")) for ft in (False, True)
                            if _key(a, ft) in rows and _key(b, ft) in rows},
    }, {"synthesis": list(synthesis), "finetune": list(finetune_opts)}, table3_markdown, out_dir,
        # the 3-D thorax run must not overwrite the 2-D one of the same profile
        "registration_thorax3d" if data == "thorax3d" else "registration")


def _key(synth: str, ft: bool) -> str:
    return f"{synth}/{'real' if ft else 'synthetic'}"


def _name(key: str) -> str:
    synth, ft = key.split("/")
    return f"{SYNTH_NAMES[synth]} {'✓' if ft == 'real' else '×'}"


def _row_summary(row: dict) -> dict:
    pp = row["per_pair"]
    neg = pp["negj"]
    return {"synthesis": row["synthesis"], "finetune": row["finetune"],
            "dice": summary(pp["dice"]), "asd": summary(pp["asd"]), "hd": summary(pp["hd"]),
            "negj_permille": None if np.isnan(neg).all() else summary(neg),
            "mean_disp_vox": summary(pp["disp"]),
            "per_pair": {"dice": pp["dice"].tolist(), "asd": pp["asd"].tolist()}}


def _tests(rows: dict) -> dict:
    """Each row vs no registration, and DRDM vs MRBS at equal fine-tuning (keys ``"a vs b"``)."""
    out = {}
    base_key = _key("none", False)
    base = rows.get(base_key)
    for key, row in rows.items():
        if base is not None and key != base_key:
            out[f"{key} vs {base_key}"] = {k: wilcoxon(row["per_pair"][k], base["per_pair"][k])
                                           for k in ("dice", "asd", "hd")}
    for ft in (False, True):
        a, b = rows.get(_key("drdm", ft)), rows.get(_key("mrbs", ft))
        if a is not None and b is not None:
            out[f"{_key('drdm', ft)} vs {_key('mrbs', ft)}"] = {k: wilcoxon(a["per_pair"][k], b["per_pair"][k])
                                                                for k in ("dice", "asd", "hd")}
    return out


def verdict(result: dict, a: str = "drdm", b: str = "mrbs", spread: dict | None = None) -> list[str]:
    """One line per fine-tuning setting: does ``a`` synthesis beat ``b`` on DSC (difference, 95 % CI, p)?
    ``spread``: ``{"<row a> vs <row b>": fraction}`` (:func:`drdm.book.phantom_spread`); a
    difference inside it is no conclusion."""
    out = []
    for ft in (False, True):
        key = f"{_key(a, ft)} vs {_key(b, ft)}"
        if _key(a, ft) not in result["rows"] or _key(b, ft) not in result["rows"]:
            continue
        p = (result["wilcoxon"].get(key) or {}).get("dice")
        out.append(compare_sentence(f"{'fine-tuned on real pairs' if ft else 'synthetic pretraining only'}, "
                                    f"{SYNTH_NAMES[a]} minus {SYNTH_NAMES[b]}",
                                    result.get("dice_difference", {}).get(key), p, unit="DSC points",
                                    spread=(spread or {}).get(key)))
    if not out:
        out.append(f"{SYNTH_NAMES[a]} or {SYNTH_NAMES[b]} was not run ({result.get('skipped') or 'not asked'}).")
    return out


#: a trained row whose fields move less than this (mean |u|, voxels) has not learned to register
STILL_VOX = 0.5


def still_rows(result: dict) -> list[str]:
    """Trained rows whose predicted fields barely move (mean |u| < :data:`STILL_VOX` voxels):
    they score close to no registration, whatever the synthesis."""
    means = {k: r["mean_disp_vox"]["mean"] for k, r in result["rows"].items() if k != _key("none", False)}
    return [k for k, m in means.items() if m is not None and m < STILL_VOX]


def table3_markdown(result: dict) -> str:
    """Table 3's layout: synthesis, real training, DSC (%), ASD and HD (voxels), |J|<0 (per mille),
    plus the mean magnitude of the predicted fields (voxels)."""
    lines = ["Registration (Table 3 layout): inter-subject pairs of test subjects", "",
             "| synth method | real train | DSC↑ (%) | ASD↓ (vox) | HD↓ (vox) | \\|J\\|<0 ↓ (‰) | mean \\|u\\| (vox) |",
             "|---|---|---|---|---|---|---|"]
    order = [(s, ft) for ft in (False, True) for s in SYNTHESIS]
    for s, ft in order:
        row = result["rows"].get(_key(s, ft))
        if row is None:
            continue
        neg, disp = row["negj_permille"], row["mean_disp_vox"]
        lines.append(f"| {SYNTH_NAMES[s]} | {'✓' if ft else '×'} | {fmt(row['dice']['mean'], 2, 100)} | "
                     f"{fmt(row['asd']['mean'], 2)} | {fmt(row['hd']['mean'], 2)} | "
                     f"{fmt(None if neg is None else neg['mean'], 2)} | {fmt(disp['mean'], 2)} |")
    still = still_rows(result)
    if still:
        lines += ["", f"Not yet learned: {', '.join(_name(k) for k in still)}: the predicted fields move less than "
                      f"{STILL_VOX} voxel on average, so these rows score close to no registration; at this "
                      "profile's length the network has not learned to register."]
    if result.get("wilcoxon"):
        lines += ["", "Paired Wilcoxon signed-rank p-values over test pairs", "",
                  "| comparison | DSC | ASD | HD |", "|---|---|---|---|"]
        for name, p in result["wilcoxon"].items():
            a, b = name.split(" vs ")
            lines.append(f"| {_name(a)} vs {_name(b)} | {fmt_p(p['dice'])} | {fmt_p(p['asd'])} | {fmt_p(p['hd'])} |")
    if result.get("skipped"):
        lines += [""] + [f"Skipped {m}: {why}" for m, why in result["skipped"].items()]
    return "\n".join(lines)
