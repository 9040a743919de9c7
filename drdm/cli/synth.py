"""``drdm synth``: Algorithm 4, moving/fixed registration pairs with the target field phi_syn."""
from __future__ import annotations

import argparse

from ..sampling import network_input
from ..seeds import sample_seed
from .common import (MAX_SAMPLES, SLICEWISE_HELP, Job, add_sampling_args, check_levels, check_total,
                     field_metrics, run_record, sample_count, setup, warp_outputs, write_sample)


def pairs_arg(text: str) -> list[tuple[int, int]]:
    out = []
    for part in (p for p in text.split(",") if p.strip()):
        try:
            a, s = part.split(":")
            out.append((int(a), int(s)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"pairs must look like 30:10,45:15 (T'_aug:T'_syn), got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("pairs must name at least one T'_aug:T'_syn")
    return out


def synth_names(ta: int, ts: int, index: int, with_label: bool) -> dict:
    tag = f"A{ta}_S{ts}_{index:03d}.nii.gz"
    names = {"moving": f"moving_{tag}", "fixed": f"fixed_{tag}", "ddf": f"ddf_{tag}"}
    if with_label:
        names.update(moving_label=f"moving_lbl_{tag}", fixed_label=f"fixed_lbl_{tag}")
    return names


def cmd_synth(args) -> int:
    """Algorithm 4: moving/fixed pairs with the registration target ``phi_syn``."""
    from ..sampling import registration_pairs
    check_total(args.n, len(set(map(tuple, args.pairs))), "pairs")
    net, inputs, grid, device, opts = setup(args)
    T = net.config.timesteps
    pairs = list(dict.fromkeys((int(a), int(s)) for a, s in args.pairs))
    check_levels([a for a, _ in pairs], T, "T'_aug")
    check_levels([s for _, s in pairs], T, "T'_syn")
    plan = {f"A{a}_S{s}_{i}": (a, s, i) for a, s in pairs for i in range(opts.n)}
    names = {k: synth_names(*p, inputs.label is not None) for k, p in plan.items()}
    run = run_record("synth", opts, inputs, grid, pairs=[list(p) for p in pairs])
    image_net = network_input(net, grid, inputs.image, device)
    with Job("synth", opts, net, inputs, grid, device, names, run, pairs=[list(p) for p in pairs], n=opts.n,
              note="ddf = phi_syn: warping moving by it gives fixed (pull-back), up to interpolation") as job:
        for key in job.todo():
            a, s, i = plan[key]
            r = registration_pairs(net, grid, None, (a, s), [sample_seed(opts.seed, "field", a, s, i)], recover=opts.recover,
                                   settings=opts.settings, network_image=image_net)
            aug_in, both_in, syn_in = r["aug"], r["both"], r["syn"]     # both: moving's field, then phi_syn
            mv, mv_lab = warp_outputs(net, opts.settings, inputs, aug_in, grid)
            fx, fx_lab = warp_outputs(net, opts.settings, inputs, both_in, grid)
            labels = {} if mv_lab is None else {"moving_label": mv_lab, "fixed_label": fx_lab}
            sums = write_sample(job.out, inputs, names[key], {"moving": mv, "fixed": fx}, labels, syn_in)
            job.record(key, {"t_aug": a, "t_syn": s, "t_prime": [a, s], "index": i, "sha256": sums,
                             "metrics": field_metrics(grid.per_image(syn_in)), "metrics_aug": field_metrics(grid.per_image(aug_in))})
    return 0


HELP = "Algorithm 4: moving/fixed registration pairs with the target DDF phi_syn"
DESCRIPTION = ("Algorithm 4: for each T'_aug:T'_syn pair, --n (moving, fixed, phi_syn) triples "
               "(+ labels warped the same way) and DIR/manifest.json; re-running resumes.")


def add_arguments(p) -> None:
    """``drdm synth``'s options."""
    p.add_argument("--image", required=True)
    p.add_argument("--label")
    p.add_argument("--pairs", type=pairs_arg, required=True, help="T'_aug:T'_syn pairs, e.g. 30:10,45:15")
    p.add_argument("--n", type=sample_count, default=1,
                   help=f"pairs per T'_aug:T'_syn (default 1; at most {MAX_SAMPLES:,} samples per run in all)")
    p.add_argument("--out", required=True)
    p.add_argument("--slicewise", action="store_true", help=SLICEWISE_HELP)
    add_sampling_args(p)
