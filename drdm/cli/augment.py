"""``drdm augment``: Algorithm 3 on a reader's NIfTI image (and label).

Every sample draws its random field from its own generator seeded by ``(seed, level,
index)`` (and slice, with ``--slicewise``), and on CPU the network sees one image at a
time, so outputs do not depend on ``--batch`` or on where a run was interrupted.
Geometry: :mod:`drdm.grid`; output folders: :mod:`drdm.outputs`.
"""
from __future__ import annotations

from ..seeds import sample_seed
from .common import (MAX_SAMPLES, SLICEWISE_HELP, Job, add_sampling_args, check_levels, check_total,
                     field_metrics, levels_arg, positive, run_record, sample_count, setup, warp_outputs, write_sample)


def augment_names(level: int, index: int, with_label: bool) -> dict:
    tag = f"L{level}_{index:03d}.nii.gz"
    names = {"image": f"img_{tag}", "ddf": f"ddf_{tag}"}
    if with_label:
        names["label"] = f"lbl_{tag}"
    return names


def cmd_augment(args) -> int:
    """Algorithm 3: ``--n`` deformed copies of an image (and label) per level."""
    from ..sampling import deform_input, network_input, process_for
    check_total(args.n, len(set(args.levels)), "levels")
    net, inputs, grid, device, opts = setup(args)
    check_levels(args.levels, net.config.timesteps)
    levels = list(dict.fromkeys(int(v) for v in args.levels))
    names = {f"L{lv}_{i}": augment_names(lv, i, inputs.label is not None) for lv in levels for i in range(opts.n)}
    run = run_record("augment", opts, inputs, grid, levels=levels)
    m = grid.images_per_sample
    image_net = network_input(net, grid, inputs.image, device)            # once: every sample deforms it
    fp = process_for(net, image_net)
    per_call = max(1, opts.batch // m)

    def field_seeds(lv, i):
        # one generator per sample (per slice of a stack): independent of --batch and of resuming
        return sample_seed(opts.seed, "field", lv, i) if m == 1 else [sample_seed(opts.seed, "field", lv, i, k) for k in range(m)]

    with Job("augment", opts, net, inputs, grid, device, names, run,
              levels=levels, n=opts.n, batch=opts.batch) as job:
        todo = set(job.todo())
        for lv in levels:
            mine = [i for i in range(opts.n) if f"L{lv}_{i}" in todo]
            for c in range(0, len(mine), per_call):
                idx = mine[c:c + per_call]
                ddf_net_all, ddf_in_all = deform_input(net, grid, inputs.image, lv, [field_seeds(lv, i) for i in idx],
                                                       settings=opts.settings, recover=opts.recover, device=device,
                                                       process=fp, network_image=image_net)
                for j, i in enumerate(idx):
                    key = f"L{lv}_{i}"
                    ddf_net = ddf_net_all[j * m:(j + 1) * m]
                    ddf_in = ddf_in_all[j:j + 1]
                    img, lab = warp_outputs(net, opts.settings, inputs, ddf_in, grid)
                    sums = write_sample(job.out, inputs, names[key], {"image": img},
                                         {} if lab is None else {"label": lab}, ddf_in)
                    job.record(key, {"level": lv, "t_prime": lv, "index": i, "sha256": sums,
                                     "metrics": field_metrics(grid.per_image(ddf_in)),
                                     "metrics_network_grid": field_metrics(ddf_net)})
    return 0


HELP = "Algorithm 3: deformed copies of a NIfTI image (and label) with their DDFs"
DESCRIPTION = ("Algorithm 3 on a 2-D image, a 2-D slice stored as (H, W, 1), a 3-D volume, or "
               "(--slicewise) the slices of a 3-D stack with a 2-D network. "
               "Writes DIR/img_L{level}_{index}.nii.gz, lbl_..., ddf_... (voxels of the input grid) "
               "and DIR/manifest.json; re-running with the same arguments resumes.")


def add_arguments(p) -> None:
    """``drdm augment``'s options."""
    p.add_argument("--image", required=True, help="input image (.nii or .nii.gz)")
    p.add_argument("--label", help="optional label map on the same grid (integer values)")
    p.add_argument("--levels", type=levels_arg, required=True, help="comma-separated T' values, e.g. 30,45")
    p.add_argument("--n", type=sample_count, required=True,
                   help=f"samples per level (at most {MAX_SAMPLES:,} samples per run in all)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch", type=positive, default=8,
                   help="images per network call (default 8; with --slicewise each slice counts, and one "
                        "whole stack goes per call at least)")
    p.add_argument("--slicewise", action="store_true", help=SLICEWISE_HELP)
    add_sampling_args(p)
