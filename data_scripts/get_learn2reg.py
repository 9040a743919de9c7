#!/usr/bin/env python3
"""Learn2Reg 2021 task 2 (lung CT, inspiration/expiration): verify a download, lay it out for drdm.data.

The data are distributed from the Learn2Reg site (grand-challenge sign-in). Download
the task 2 zip yourself, or point --base-url at a mirror, then:

    python data_scripts/get_learn2reg.py --zip LungCT.zip --out data/learn2reg_lung
    python data_scripts/get_learn2reg.py --base-url https://my.mirror/l2r/ --name LungCT.zip --out data/learn2reg_lung

Output: OUT/imagesTr/case_XXX_{exp,insp}.nii.gz, OUT/masksTr/... (and *Ts, keypoints*
when present), plus OUT/SHA256SUMS; read with drdm.data.load_learn2reg_lung(OUT).
Every image is read completely and each mask must match its image's shape.
Exit code 2 with one line on stderr on any problem.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fetch  # noqa: E402

SITE = "https://learn2reg.grand-challenge.org/Datasets/"
MANUAL = [
    "Learn2Reg 2021 task 2 (lung CT) is downloaded by hand:",
    f"  1. open {SITE} (sign in to grand-challenge) and download the 2021 task 2 lung CT zip;",
    "  2. run: python data_scripts/get_learn2reg.py --zip <the zip> --out data/learn2reg_lung",
    "     (or --from-dir <the unpacked folder>, or --base-url <a mirror> --name <zip name>).",
]
SHORT = f"Download the Learn2Reg 2021 task 2 zip by hand from {SITE}, then run get_learn2reg.py --zip <zip> --out DIR."
MEMBER = re.compile(r"(?:^|.*/)((?:images|masks|keypoints)T[rs])/(case_\d{3}_(?:exp|insp)\.(?:nii\.gz|csv))")


def convert(src: Path, out: Path, overwrite: bool = False) -> list[Path]:
    written = []
    with _fetch.Source(src) as s:
        members = sorted((m.group(1), m.group(2), n) for n in s.names() if (m := MEMBER.fullmatch(n)))
        shapes = {}
        for folder, fname, n in members:         # images* sort before masks*
            local = s.local(n)
            if fname.endswith(".nii.gz"):
                img, _ = _fetch.check_nifti(local, f"{src}:{n}")
                key = (folder[-2:], fname)
                if folder.startswith("images"):
                    shapes[key] = img.shape
                elif key in shapes and shapes[key] != img.shape:
                    raise _fetch.FetchError(f"{src}:{n}: mask shape {img.shape} differs from image shape "
                                            f"{shapes[key]}")
            _fetch.place(local, out / folder / fname, overwrite=overwrite, move=s.is_zip)
            written.append(out / folder / fname)
        if not shapes:
            raise _fetch.FetchError(f"{src}: no Learn2Reg lung images (imagesTr/case_XXX_exp.nii.gz) found")
        _fetch.info(f"ok       {len(shapes)} images, {len(written) - len(shapes)} masks/keypoint files")
    return written


def main() -> None:
    p = _fetch.parser(__doc__.splitlines()[0], out_default="data/learn2reg_lung", base_default=None)
    _fetch.add_source_args(p, "LungCT.zip")
    args = p.parse_args()
    src = _fetch.resolve_source(args, MANUAL, SHORT)
    out = Path(args.out)
    written = convert(src, out, args.overwrite)
    _fetch.write_sums(out, written)
    print(f"{len(written)} files under {out}; load them with drdm.data.load_learn2reg_lung({str(out)!r})")


if __name__ == "__main__":
    _fetch.run(main)
