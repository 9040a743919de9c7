#!/usr/bin/env python3
"""M&Ms (Multi-Centre, Multi-Vendor & Multi-Disease cardiac MRI): verify a download, extract ED/ES for drdm.data.load_mnms.

M&Ms needs a registration, so this script cannot fetch it on its own. Download the
data yourself, then:

    python data_scripts/get_mnms.py --zip OpenDataset.zip --out data/mnms
    python data_scripts/get_mnms.py --from-dir ~/Downloads/OpenDataset --out data/mnms
    python data_scripts/get_mnms.py --from-dir ../shared/data/mnms_subset --out data/mnms   # already 3-D

Two input layouts are understood:

* the official release: <code>/<code>_sa.nii.gz (4-D cine) and <code>_sa_gt.nii.gz (4-D, labels on the
  ED and ES frames only), with the information CSV (columns "External code", "Vendor", "ED", "ES"; found
  in the download or given with --info). The ED/ES frames are cut out and written as
  OUT/<vendor>/{ED,ES}_<code>_sa.nii.gz and OUT/LABEL_<vendor>/{ED,ES}_<code>_sa_gt.nii.gz, keeping the
  affine (so the true spacing); labels stay in the M&Ms order (1 LV, 2 myocardium, 3 RV) on disk and
  load_mnms swaps them to ACDC's.
* that 3-D layout itself (e.g. the development subset): files are checked against MANIFEST.csv when
  present and copied with their relative paths.

Exit code 2 with one line on stderr on any problem.
"""
from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fetch  # noqa: E402

SITE = "https://www.ub.edu/mnms/"
MANUAL = [
    "M&Ms needs a registration; download it by hand:",
    f"  1. open {SITE} and fill in the data request form;",
    "  2. download the 'OpenDataset' zip (Training/Labeled, Validation, Testing and the information CSV);",
    "  3. run: python data_scripts/get_mnms.py --zip <the zip> --out data/mnms",
    "     (or --from-dir <the unpacked OpenDataset folder>).",
]
SHORT = f"Request M&Ms at {SITE} (registration), download it by hand, then run get_mnms.py --zip <zip> --out DIR."
PHASE_FILE = re.compile(r"(?:^|.*/)(ED|ES)_[A-Za-z0-9]+_sa(?:_gt)?\.nii\.gz")
CINE = re.compile(r"(?:^|(.*)/)([A-Za-z0-9]+)_sa\.nii\.gz")


def _copy_3d(s: _fetch.Source, src: Path, names: list[str], out: Path, overwrite: bool) -> list[Path]:
    manifest = {}
    man_name = next((n for n in names if n.rsplit("/", 1)[-1] == "MANIFEST.csv"), None)
    prefix = ""
    if man_name:
        prefix = man_name[: -len("MANIFEST.csv")]
        with open(s.local(man_name), newline="") as f:
            for row in csv.DictReader(f):
                if row.get("local") and row.get("sha256"):
                    manifest[prefix + row["local"]] = row["sha256"].lower()
    written = []
    for n in names:
        if not PHASE_FILE.fullmatch(n):
            continue
        local = s.local(n)
        if n in manifest and _fetch.sha256_file(local) != manifest[n]:
            raise _fetch.FetchError(f"{src}:{n}: sha256 differs from {man_name}")
        _fetch.check_nifti(local, f"{src}:{n}")
        rel = _fetch.safe_relpath(n[len(prefix):] if n.startswith(prefix) else n, str(src))
        _fetch.place(local, out / rel, overwrite=overwrite, move=s.is_zip)
        written.append(out / rel)
    missing = set(manifest) - set(names)
    if missing:
        raise _fetch.FetchError(f"{src}: {len(missing)} files of {man_name} are missing, e.g. {sorted(missing)[0]}")
    return written


def _read_info(path: Path, name: str) -> dict[str, dict]:
    text = path.read_text(errors="replace")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise _fetch.FetchError(f"{name}: empty information CSV")
    cols = {c.strip().lower(): c for c in rows[0] if c}
    need = ["external code", "ed", "es"]
    if not all(c in cols for c in need):
        raise _fetch.FetchError(f"{name}: expected columns 'External code', 'ED', 'ES' (and 'Vendor'), "
                                f"got {list(rows[0])}")
    info = {}
    for r in rows:
        try:
            info[r[cols["external code"]].strip()] = {
                "ED": int(float(r[cols["ed"]])), "ES": int(float(r[cols["es"]])),
                "vendor": (r.get(cols.get("vendor", ""), "") or "").strip() or "unknown"}
        except (TypeError, ValueError):
            continue
    return info


def _pick_frames(code: str, gt, row: dict | None, name: str) -> dict[str, int]:
    """ED/ES frame indices (0-based) among the labelled frames of the 4-D label map."""
    import numpy as np

    labelled = [t for t in range(gt.shape[-1]) if gt[..., t].any()]
    if len(labelled) < 2:
        raise _fetch.FetchError(f"{name}: {len(labelled)} labelled frames; expected ED and ES")
    if row is not None:
        picks = {}
        for ph in ("ED", "ES"):
            t = row[ph]
            if t in labelled:
                picks[ph] = t                 # the CSV counts frames from 0
            elif t - 1 in labelled:
                picks[ph] = t - 1             # ... or from 1
            else:
                raise _fetch.FetchError(f"{name}: the information CSV gives {ph} frame {t} for {code}, "
                                        f"but the labelled frames are {labelled}")
        return picks
    # no CSV: end-diastole is the labelled frame with the largest LV cavity (M&Ms label 1)
    lv = [int(np.count_nonzero(gt[..., t] == 1)) for t in labelled]
    order = [labelled[i] for i in np.argsort(lv)[::-1]]
    return {"ED": order[0], "ES": order[1]}


def _convert_4d(s: _fetch.Source, src: Path, names: list[str], out: Path, info_csv: str | None,
                overwrite: bool) -> list[Path]:
    import nibabel as nib
    import numpy as np

    info = {}
    if info_csv:
        info = _read_info(Path(info_csv), info_csv)
    else:
        for n in names:
            if n.lower().endswith(".csv"):
                local = s.local(n)
                head = local.read_text(errors="replace").splitlines()[:1]
                if head and "external code" in head[0].lower():
                    info = _read_info(local, f"{src}:{n}")
                    break
    nameset = set(names)
    cines = [(m.group(1) or "", m.group(2), n) for n in names if (m := CINE.fullmatch(n))]
    written = []
    for folder, code, n in cines:
        gt_name = f"{folder}/{code}_sa_gt.nii.gz" if folder else f"{code}_sa_gt.nii.gz"
        if gt_name not in nameset:
            continue                          # unlabelled subject
        where = f"{src}:{gt_name}"
        img, arr = _fetch.check_nifti(s.local(n), f"{src}:{n}")
        gt_img, gt = _fetch.check_nifti(s.local(gt_name), where)
        if arr.ndim != 4 or gt.shape != arr.shape:
            raise _fetch.FetchError(f"{where}: expected 4-D image and label of one shape, got {arr.shape} "
                                    f"and {gt.shape}")
        row = info.get(code)
        frames = _pick_frames(code, gt, row, where)
        vendor = _fetch.safe_relpath(row["vendor"] if row else "unknown", where)
        for phase, t in frames.items():
            for data, ref, sub, suffix, dtype in ((arr[..., t], img, vendor, "_sa.nii.gz", np.float32),
                                                  (gt[..., t], gt_img, f"LABEL_{vendor}", "_sa_gt.nii.gz",
                                                   np.uint8)):
                hdr = ref.header.copy()
                hdr.set_data_dtype(dtype)
                hdr.set_slope_inter(1.0, 0.0)
                nii = nib.Nifti1Image(np.asarray(data, dtype=dtype), ref.affine, hdr)
                dest = out / sub / f"{phase}_{code}{suffix}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.new.nii.gz")
                try:
                    nib.save(nii, str(tmp))
                    _fetch.place(tmp, dest, overwrite=overwrite, move=True)
                finally:
                    if tmp.exists():
                        tmp.unlink()
                written.append(dest)
        _fetch.info(f"ok       {code} (vendor {vendor}, ED frame {frames['ED']}, ES frame {frames['ES']})")
    return written


def convert(src: Path, out: Path, info_csv: str | None = None, overwrite: bool = False) -> list[Path]:
    with _fetch.Source(src) as s:
        names = s.names()
        if any(PHASE_FILE.fullmatch(n) for n in names):
            written = _copy_3d(s, src, names, out, overwrite)
        else:
            written = _convert_4d(s, src, names, out, info_csv, overwrite)
    if not written:
        raise _fetch.FetchError(f"{src}: no labelled M&Ms volumes found (<code>/<code>_sa.nii.gz with "
                                f"<code>_sa_gt.nii.gz, or <vendor>/ED_<code>_sa.nii.gz)")
    return written


def main() -> None:
    p = _fetch.parser(__doc__.splitlines()[0], out_default="data/mnms", base_default=None)
    _fetch.add_source_args(p, "OpenDataset.zip")
    p.add_argument("--info", metavar="CSV", help="the M&Ms information CSV (default: found in the download)")
    args = p.parse_args()
    src = _fetch.resolve_source(args, MANUAL, SHORT)
    out = Path(args.out)
    written = convert(src, out, args.info, args.overwrite)
    _fetch.write_sums(out, written)
    print(f"{len(written)} files under {out}; load them with drdm.data.load_mnms({str(out)!r})")


if __name__ == "__main__":
    _fetch.run(main)
