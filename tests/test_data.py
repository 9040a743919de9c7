"""drdm.data: NIfTI round trip, loader errors, dataset layouts, preprocessing, splits.

Training-time augmentation is tested in test_training.py (drdm.training.augment_batch)."""
import gzip
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from drdm import data, shared

MNMS = shared.mnms_dir()   # None without the shared data


# ---------------------------------------------------------------- helpers

def _affine(spacing=(1.5, 1.25, 8.0)):
    """A rotated, shifted affine with the given voxel sizes."""
    c, s = np.cos(0.3), np.sin(0.3)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    A = np.eye(4)
    A[:3, :3] = R @ np.diag(spacing)
    A[:3, 3] = [-10.0, 20.5, 3.0]
    return A


def _heart(shape=(40, 36, 6), seed=0):
    """Image and ACDC-convention label: LV disc (3) in a myocardium ring (2), RV (1) beside it."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - shape[0] * 0.55, y - shape[1] / 2)
    sl = np.zeros(shape[:2], np.int16)
    sl[(np.hypot(x - shape[0] * 0.2, y - shape[1] / 2) < 6)] = 1
    sl[r < 9] = 2
    sl[r < 6] = 3
    label = np.repeat(sl[..., None], shape[2], axis=2)
    label[..., 0] = 0                                     # an empty apical slice
    image = (label * 100 + rng.normal(0, 5, shape) + 50).astype(np.float32)
    return image, label


def _write(path, array, affine=None, dtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array) if dtype is None else np.asarray(array).astype(dtype)
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


def _one_line_error(excinfo, path, words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    assert words in msg, msg


# ---------------------------------------------------------------- NIfTI round trip

def test_nifti_round_trip_keeps_affine_spacing_and_label_dtype(tmp_path):
    image, label = _heart()
    A = _affine()
    p_img = data.save_nifti(tmp_path / "img.nii.gz", image, A)
    p_lab = data.save_nifti(tmp_path / "lab.nii.gz", label, A, label=True)
    img2, A2, sp2 = data.load_nifti(p_img)
    lab2, A3, sp3 = data.load_nifti(p_lab, label=True)
    np.testing.assert_array_equal(img2, image)
    assert img2.dtype == np.float32
    np.testing.assert_allclose(A2, A, atol=1e-5)
    np.testing.assert_allclose(A3, A, atol=1e-5)
    np.testing.assert_allclose(sp2, (1.5, 1.25, 8.0), rtol=1e-6)
    assert sp3 == sp2
    assert nib.load(str(p_lab)).get_data_dtype() == np.uint8      # integer on disk
    assert lab2.dtype.kind == "i"
    np.testing.assert_array_equal(lab2, label)
    # 2-D works too, and like= keeps the reference header's fields
    ref = nib.load(str(p_img))
    ref.header["descrip"] = b"reference"
    p2d = data.save_nifti(tmp_path / "slice.nii", image[..., 2], like=ref)
    a2d, A2d, sp2d = data.load_nifti(p2d)
    assert a2d.shape == image.shape[:2] and sp2d == pytest.approx((1.5, 1.25))
    assert nib.load(str(p2d)).header["descrip"].item() == b"reference"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary files


def test_save_refuses_overwrite_and_leaves_nothing_on_error(tmp_path):
    image, label = _heart()
    target = data.save_nifti(tmp_path / "a.nii.gz", image)
    before = target.read_bytes()
    with pytest.raises(data.DataError, match="overwrite=True") as e:
        data.save_nifti(target, image * 2)
    _one_line_error(e, target, "exists")
    assert target.read_bytes() == before
    data.save_nifti(target, image * 2, overwrite=True)
    assert np.allclose(data.load_nifti(target)[0], image * 2)
    bad = image.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(data.DataError, match="NaN or Inf"):
        data.save_nifti(tmp_path / "nan.nii.gz", bad)
    with pytest.raises(data.DataError, match="non-integer"):
        data.save_nifti(tmp_path / "lab.nii.gz", label + 0.5, label=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]


# ---------------------------------------------------------------- loader errors

def test_4d_image_is_refused(tmp_path):
    p = _write(tmp_path / "x.nii.gz", np.zeros((6, 5, 4, 3), np.float32))
    with pytest.raises(data.DataError) as e:
        data.load_nifti(p)
    _one_line_error(e, p, "4-D image (6, 5, 4, 3); expected 2-D or 3-D")


def test_trailing_singleton_axes_are_dropped(tmp_path):
    p = _write(tmp_path / "x.nii.gz", np.ones((6, 5, 1), np.float32))
    assert data.load_nifti(p)[0].shape == (6, 5)


def test_nan_image_is_refused(tmp_path):
    a = np.ones((6, 5, 4), np.float32)
    a[1, 2, 3] = np.inf
    p = _write(tmp_path / "nan.nii.gz", a)
    with pytest.raises(data.DataError) as e:
        data.load_nifti(p)
    _one_line_error(e, p, "NaN or Inf values")


@pytest.mark.parametrize("values, words", [(np.zeros((6, 5, 4)), "label map is empty (all zeros)"),
                                           (np.full((6, 5, 4), 1.5), "label has non-integer values"),
                                           (np.full((6, 5, 4), -1.0), "negative label values")])
def test_bad_label_maps_are_refused(tmp_path, values, words):
    p = _write(tmp_path / "lab.nii.gz", values, dtype=np.float32)
    with pytest.raises(data.DataError) as e:
        data.load_nifti(p, label=True)
    _one_line_error(e, p, words)


def test_shape_mismatch_is_refused(tmp_path):
    image, label = _heart()
    _write(tmp_path / "a.nii.gz", image)
    gt = _write(tmp_path / "a_gt.nii.gz", label[:-1], dtype=np.uint8)
    with pytest.raises(data.DataError) as e:
        data.load_nifti_folder(tmp_path)
    _one_line_error(e, gt, "image shape (40, 36, 6) and label shape (39, 36, 6) differ")


def test_non_nifti_files_are_refused(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_text("hello, I am not an image\n")
    with pytest.raises(data.DataError) as e:
        data.load_nifti(text)
    _one_line_error(e, text, "not a NIfTI file")
    zipped = tmp_path / "zipped.nii.gz"
    zipped.write_bytes(gzip.compress(b"x" * 1000))
    with pytest.raises(data.DataError) as e:
        data.load_nifti(zipped)
    _one_line_error(e, zipped, "not a NIfTI file (no NIfTI-1/2 header magic)")
    with pytest.raises(data.DataError) as e:
        data.load_nifti(tmp_path / "missing.nii.gz")
    _one_line_error(e, tmp_path / "missing.nii.gz", "no such file")


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_gzip_is_refused(tmp_path, keep):
    rng = np.random.default_rng(0)
    p = _write(tmp_path / "t.nii.gz", rng.normal(size=(30, 30, 8)).astype(np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(data.DataError) as e:
        data.load_nifti(p)
    _one_line_error(e, p, "truncated or corrupt gzip")


def test_truncated_uncompressed_nifti_is_refused(tmp_path):
    p = _write(tmp_path / "t.nii", np.ones((30, 30, 8), np.float32))
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(data.DataError) as e:
        data.load_nifti(p)
    _one_line_error(e, p, "truncated or corrupt")


# ---------------------------------------------------------------- dataset layouts

def _acdc_fixture(root, n=3):
    for i in range(1, n + 1):
        pid = f"patient{i:03d}"
        d = root / "training" / pid
        d.mkdir(parents=True)
        ed, es = 1, 5 + i
        (d / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\nWeight: 80.0\n")
        for frame in (ed, es):
            image, label = _heart(seed=i * 100 + frame)
            A = _affine((1.5625, 1.5625, 10.0))
            _write(d / f"{pid}_frame{frame:02d}.nii.gz", image.astype(np.int16), A)
            _write(d / f"{pid}_frame{frame:02d}_gt.nii.gz", label, A, dtype=np.uint8)
        _write(d / f"{pid}_4d.nii.gz", np.zeros((4, 4, 2, 3), np.int16))      # ignored


def test_load_acdc_official_layout(tmp_path):
    _acdc_fixture(tmp_path)
    recs = data.load_acdc(tmp_path)
    assert [(r.subject, r.phase) for r in recs] == [(f"patient{i:03d}", ph) for i in (1, 2, 3) for ph in ("ED", "ES")]
    r = recs[3]
    assert r.meta["frame"] == 7 and r.meta["group"] == "NOR"
    assert r.image.dtype == np.float32 and r.image.shape == (40, 36, 6)
    assert r.label.dtype.kind == "i" and set(np.unique(r.label)) == {0, 1, 2, 3}
    assert r.spacing == pytest.approx((1.5625, 1.5625, 10.0))
    assert r.source == "ACDC" and r.label_convention == data.ACDC_CONVENTION
    # a missing frame file is named
    missing = tmp_path / "training" / "patient002" / "patient002_frame07.nii.gz"
    missing.unlink()
    with pytest.raises(data.DataError) as e:
        data.load_acdc(tmp_path)
    _one_line_error(e, missing, "missing (Info.cfg says ES: 7)")


def test_load_acdc_h5_volumes_and_slices(tmp_path):
    image, label = _heart()
    # 12 distinct slices, so a text sort (slice_10 before slice_2) cannot restack them right
    image, label = np.concatenate([image, image[::-1]], axis=2), np.concatenate([label, label[::-1]], axis=2)
    vol = np.transpose(image, (2, 0, 1))                     # the h5 form stores (slices, H, W)
    lab = np.transpose(label, (2, 0, 1)).astype(np.uint8)
    with h5py.File(tmp_path / "patient001_frame01.h5", "w") as f:
        f["image"], f["label"] = vol, lab
    with h5py.File(tmp_path / "patient045_frame12.h5", "w") as f:
        f["image"], f["label"] = vol, lab
        f.attrs["spacing"] = [10.0, 1.5, 1.5]
    sdir = tmp_path / "slices"
    sdir.mkdir()
    for k in np.random.default_rng(0).permutation(vol.shape[0]):   # numbered from 1, written in any order
        with h5py.File(sdir / f"patient083_frame02_slice_{k + 1}.h5", "w") as f:
            f["image"], f["label"] = vol[k], lab[k]                # an empty slice label is allowed
    recs = data.load_acdc_h5(tmp_path)
    by = {r.subject: r for r in recs}
    assert len(recs) == 3
    assert by["patient001"].image.shape == image.shape == (40, 36, 12)        # slices last, as NIfTI
    assert by["patient001"].spacing == (1.0, 1.0, 1.0) and by["patient045"].spacing == (1.5, 1.5, 10.0)
    assert (by["patient001"].phase, by["patient045"].phase, by["patient083"].phase) == ("ED", None, "ES")
    assert by["patient045"].meta["frame"] == 12
    assert [by[s].meta["group"] for s in ("patient001", "patient045", "patient083")] == ["DCM", "MINF", "RV"]
    # the slice form restacks to exactly the volume form
    np.testing.assert_array_equal(by["patient083"].image, by["patient001"].image)
    np.testing.assert_array_equal(by["patient083"].label, by["patient001"].label)
    assert by["patient083"].meta["slices"] == list(range(1, 13))
    np.testing.assert_array_equal(by["patient001"].label, label)
    cut = data.slices([by["patient083"]], skip_empty=False)
    assert len(cut) == 12 and np.array_equal(cut[2].image, vol[2]) and np.array_equal(cut[9].image, vol[9])
    bad = tmp_path / "patient009_frame01.h5"
    with h5py.File(bad, "w") as f:
        f["img"] = vol
    with pytest.raises(data.DataError) as e:
        data.load_acdc_h5(tmp_path)
    _one_line_error(e, bad, "no 'image' dataset")
    bad.unlink()
    with h5py.File(sdir / "patient001_frame01_slice_1.h5", "w") as f:
        f["image"], f["label"] = vol[0], lab[0]
    with pytest.raises(data.DataError, match="both the volume and the slice form"):
        data.load_acdc_h5(tmp_path)


def test_the_shared_acdc_slice_form_restacks_to_whole_frames():
    from drdm.shared import acdc_slices_dir
    root = acdc_slices_dir()
    if root is None:
        pytest.skip("no ../shared/data/acdc_slices")
    sub = sorted((root / "slices").glob("patient003_frame0*_slice_*.h5"))
    import shutil, tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for p in sub:
            shutil.copy(p, tmp)
        recs = data.load_acdc_h5(tmp)
    assert [(r.subject, r.phase) for r in recs] == [("patient003", "ED"), ("patient003", "ES")]
    ed, es = recs
    assert ed.image.shape[-1] == len(ed.meta["slices"]) == len(sub) // 2 and ed.meta["group"] == "DCM"
    assert ed.image.min() == 0.0 and ed.image.max() == 1.0            # min-max per volume, not per slice
    assert (ed.label == 3).sum() > (es.label == 3).sum()               # LV cavity larger at ED


def test_load_learn2reg_lung_layout(tmp_path):
    rng = np.random.default_rng(0)
    A = np.diag([1.75, 1.75, 1.75, 1.0])
    for case in (1, 2):
        for phase in ("exp", "insp"):
            img = rng.normal(-500, 100, (24, 20, 22)).astype(np.float32)
            mask = np.zeros((24, 20, 22), np.uint8)
            mask[4:20, 3:17, 5:18] = 255 if case == 2 else 1
            _write(tmp_path / "imagesTr" / f"case_{case:03d}_{phase}.nii.gz", img, A)
            _write(tmp_path / "masksTr" / f"case_{case:03d}_{phase}.nii.gz", mask, A)
    (tmp_path / "keypointsTr").mkdir()
    recs = data.load_learn2reg_lung(tmp_path)
    assert [(r.subject, r.phase) for r in recs] == [("case_001", "exp"), ("case_001", "insp"),
                                                    ("case_002", "exp"), ("case_002", "insp")]
    assert all(set(np.unique(r.label)) == {0, 1} for r in recs)
    assert recs[0].spacing == pytest.approx((1.75,) * 3)
    assert recs[0].label.sum() == 16 * 14 * 13


@pytest.fixture(scope="module")
def mnms():
    if MNMS is None:
        pytest.skip(shared.absent_reason("M&Ms development subset"))
    return data.load_mnms(MNMS)


def test_mnms_subset_loads_and_lv_sits_in_myocardium(mnms):
    assert len(mnms) == 40
    assert len({r.subject for r in mnms}) == 20
    assert sorted({r.phase for r in mnms}) == ["ED", "ES"]
    assert "remapped from M&Ms" in mnms[0].label_convention
    rv_touch = []
    for r in mnms:
        assert r.image.shape[:2] == (192, 192) and r.label.shape == r.image.shape
        assert set(np.unique(r.label)) <= {0, 1, 2, 3}
        z = [k for k in range(r.label.shape[2]) if (r.label[..., k] == 3).any()]
        for k in z[len(z) // 2 - 1: len(z) // 2 + 2]:              # mid-ventricular slices
            s = r.label[..., k]
            for lab, out in ((3, None), (1, rv_touch)):
                m = s == lab
                if not m.any():
                    continue
                ring = ndi.binary_dilation(m) & ~m                  # pixels just outside the structure
                frac = float((s[ring] == 2).mean())
                if out is None:
                    assert frac > 0.9, (r.path, k, frac)             # LV cavity ringed by myocardium
                else:
                    out.append(frac)
    assert np.mean(rv_touch) < 0.6                                   # the RV is not


def test_slices_and_subject_split(mnms):
    sl = data.slices(mnms[:4])
    assert all(s.image.ndim == 2 and s.label.any() for s in sl)
    assert len(data.slices(mnms[:4], skip_empty=False)) == sum(r.image.shape[2] for r in mnms[:4])
    assert {s.subject for s in sl} == {r.subject for r in mnms[:4]}
    assert sl[0].spacing == mnms[0].spacing[:2]


# ---------------------------------------------------------------- splits, slices, preprocessing

def _records(n_subjects=17, per=3):
    recs = []
    for i in range(n_subjects):
        for j in range(per):
            recs.append(data.Record(np.zeros((2, 2), np.float32), None, (1.0, 1.0), np.eye(4), f"s{i:02d}",
                                    None, "test", "none", f"s{i}_{j}"))
    return recs


def test_subject_split_never_leaks_and_is_deterministic():
    recs = _records()
    split = data.subject_split(recs, seed=3)
    subj = {k: {r.subject for r in v} for k, v in split.items()}
    assert not (subj["train"] & subj["val"]) and not (subj["train"] & subj["test"]) and not (subj["val"] & subj["test"])
    assert sum(len(v) for v in split.values()) == len(recs)
    assert [len(subj[k]) for k in ("train", "val", "test")] == [10, 4, 3]
    again = data.subject_split(list(reversed(recs)), seed=3)
    assert {k: {r.subject for r in v} for k, v in again.items()} == subj         # order-independent
    other = data.subject_split(recs, seed=4)
    assert {r.subject for r in other["train"]} != subj["train"]
    tiny = data.subject_split(_records(3, 1), seed=0)
    assert all(len(v) == 1 for v in tiny.values())
    with pytest.raises(ValueError, match="summing to 1"):
        data.subject_split(recs, (0.5, 0.2, 0.2))


def test_slices_affine_points_at_the_volume():
    image, label = _heart()
    A = _affine((1.5, 1.25, 8.0))
    rec = data.Record(image, label, (1.5, 1.25, 8.0), A, "p", "ED", "test", "x", "p.nii.gz")
    sl = data.slices([rec])
    assert [s.meta["slice"] for s in sl] == [1, 2, 3, 4, 5]        # slice 0 is empty
    s = sl[1]
    np.testing.assert_array_equal(s.image, image[..., 2])
    ij = np.array([3, 7, 0, 1.0])
    np.testing.assert_allclose(s.affine @ ij, A @ np.array([3, 7, 2, 1.0]))


def test_preprocess_geometry_and_intensity():
    # 20 x 40 voxels of 2 x 1 mm: a 40 x 40 mm square field of view fills 32 x 32 without padding
    img = np.random.default_rng(0).normal(size=(20, 40)).astype(np.float32)
    out = data.preprocess(img, 32, spacing=(2.0, 1.0))
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    # voxels taken as isotropic: the long axis fills, the short one is padded with background (0)
    lab = np.ones((20, 40), np.int16)
    lab[:, :20] = 2
    pl = data.preprocess_label(lab, 32)
    assert pl.dtype == np.int16 and set(np.unique(pl)) == {0, 1, 2}
    rows = np.flatnonzero(pl.any(1))
    assert (rows[0], rows[-1]) == (8, 23)                          # 16 rows centred in 32
    po = data.preprocess(lab.astype(np.float32), 32)
    assert (po[:8] == 0).all() and (po[24:] == 0).all()
    # threshold: clip below -1000 HU, stretch the rest
    ct = np.array([[-3000.0, -1000.0], [0.0, 1000.0]])
    np.testing.assert_allclose(data.preprocess(ct, 2, threshold=-1000.0), [[0, 0], [0.5, 1]])
    np.testing.assert_allclose(data.preprocess(ct, 2, threshold=(-1000.0, 0.0)), [[0, 0], [1, 1]])
    # 3-D, stretching every axis
    vol = np.random.default_rng(1).random((10, 12, 6))
    assert data.preprocess(vol, (16, 16, 8), isotropic=False).shape == (16, 16, 8)


def test_preprocess_record_keeps_world_positions():
    image, label = _heart((40, 36, 6))
    A = _affine((1.0, 1.0, 4.0))
    rec = data.Record(image, label, (1.0, 1.0, 4.0), A, "p", "ED", "test", "x", "p.nii.gz")
    out = data.preprocess_record(rec, 32)
    assert out.image.shape == out.label.shape == (32, 32, 32)
    assert out.spacing == pytest.approx((1.25, 1.25, 1.25), rel=0.05)
    # the LV centre (world mm) stays put
    def lv_centre(r):
        c = np.array(ndi.center_of_mass(r.label == 3))
        return (r.affine @ np.append(c, 1.0))[:3]
    np.testing.assert_allclose(lv_centre(out), lv_centre(rec), atol=1.0)


def test_save_nifti_writes_vector_fields_atomically(tmp_path):
    """vector=True: (*spatial, ndim) float32, intent vector, zooms of the spatial axes, no overwrite."""
    import nibabel as nib
    u = np.random.default_rng(0).normal(size=(6, 5, 2)).astype(np.float32)
    affine = np.diag([1.5, 2.0, 1.0, 1.0])
    p = data.save_nifti(tmp_path / "ddf.nii.gz", u, affine, vector=True)
    img = nib.load(str(p))
    assert img.shape == (6, 5, 2) and np.array_equal(np.asarray(img.dataobj), u)
    assert img.header.get_intent()[0] == "vector" and img.header.get_zooms() == (1.5, 2.0, 1.0)
    with pytest.raises(data.DataError, match="exists"):
        data.save_nifti(p, u, affine, vector=True)
    with pytest.raises(data.DataError, match="vector field"):
        data.save_nifti(tmp_path / "bad.nii.gz", u[..., 0], affine, vector=True)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ddf.nii.gz"]       # no temporary files left


def test_the_stratified_split_is_disjoint_balanced_and_nests_its_labelled_sets():
    groups = {f"patient{n:03d}": data.acdc_group(f"patient{n:03d}") for n in range(1, 101) if n % 10 not in (3, 7)}
    assert len(groups) == 80 and {g for g in groups.values()} == {"DCM", "HCM", "MINF", "NOR", "RV"}
    sp = data.stratified_split(groups, seed=0)
    test, val, pool = set(sp["test"]), set(sp["val"]), set(sp["pool"])
    assert not (test & val or test & pool or val & pool) and test | val | pool == set(groups)
    assert len(test) == 20 and len(val) == 5 and len(pool) == 55
    for name, per in (("test", 4), ("val", 1)):
        counts = {}
        for s in sp[name]:
            counts[groups[s]] = counts.get(groups[s], 0) + 1
        assert counts == dict.fromkeys(counts, per) and len(counts) == 5
    draws = [set(d) for d in sp["draws"]]
    assert len(draws) == 3 and all(len(d) == 5 and d <= pool for d in draws)
    assert not (draws[0] & draws[1] or draws[0] & draws[2] or draws[1] & draws[2])
    assert all(sorted(groups[s] for s in d) == sorted(set(groups.values())) for d in draws)   # one per group
    large = set(sp["large"])
    assert len(large) == 20 and set().union(*draws) <= large <= pool
    assert data.stratified_split(groups, seed=0) == sp and data.stratified_split(groups, seed=1) != sp
    with pytest.raises(ValueError, match="fewer than"):
        data.stratified_split({k: v for k, v in list(groups.items())[:20]})      # 4 HCM subjects
