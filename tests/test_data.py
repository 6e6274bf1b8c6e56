"""stnas.data: both backends ('dali', 'pil') through the same tests, against references the tests build
themselves: sample identities from solid colours the test chose, class labels from the folders the test
wrote, validation pixels from a PIL resize + centre crop written here, bad files the test corrupted.
"""
import faulthandler
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stnas import data as stdata
from stnas.data import DataError, ImageFolderSplit, make_loader

MEAN = np.array(stdata.IMAGENET_MEAN, np.float64)
STD = np.array(stdata.IMAGENET_STD, np.float64)
BACKENDS = [pytest.param("dali", marks=pytest.mark.skipif(not stdata.dali_available()[0],
                                                          reason="NVIDIA DALI is not importable")), "pil"]


@pytest.fixture(autouse=True)
def no_hang():
    """A pipeline that hangs fails the run after 120 s with every thread's stack, instead of blocking it."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _loader(root, split, backend, **kw):
    kw.setdefault("num_threads", 2)
    return make_loader(root, split=split, backend=backend, **kw)


# ----------------------------------------------------------------------------------------------------
# generated folders: every image a solid colour that names it

def colour_of(sample_id: int) -> tuple[int, int, int]:
    """A colour per sample id, 24 levels apart per channel: JPEG keeps a solid colour within ~2 levels."""
    return 24 + 24 * (sample_id % 9), 24 + 24 * (sample_id // 9 % 9), 24 + 24 * (sample_id // 81 % 9)


def ids_of(images: torch.Tensor) -> list[int]:
    """Sample ids back from the mean colour of each (normalised) image."""
    rgb = images.float().mean(dim=(2, 3)).double().numpy() * (STD * 255) + MEAN * 255
    idx = np.rint((rgb - 24) / 24).astype(int)
    assert np.abs(rgb - (24 + 24 * idx)).max() < 6, "a colour is far from every sample's colour"
    return (idx[:, 0] + 9 * idx[:, 1] + 81 * idx[:, 2]).tolist()


def write_solid_folder(root: Path, counts: dict[str, list[int]], splits=("train", "val")) -> dict[int, int]:
    """ImageFolder with ``counts[split][k]`` images in class folder k (names sort as the index);
    returns {sample id: class index}. Image sizes vary (odd, landscape and portrait)."""
    truth, sid = {}, 0
    for split in splits:
        for k, n in enumerate(counts[split]):
            folder = root / split / f"class_{k:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (37 + 5 * (sid % 7), 29 + 3 * (sid % 11))
                Image.new("RGB", size, colour_of(sid)).save(folder / f"img_{i:03d}.jpg", quality=95)
                truth[sid] = k
                sid += 1
    return truth


@pytest.fixture(scope="module")
def solid(tmp_path_factory):
    root = tmp_path_factory.mktemp("solid")
    truth = write_solid_folder(root, {"train": [9, 7, 8], "val": [5, 4, 3]})
    return root, truth


def epoch_ids(loader) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for x, y in loader:
        ids += ids_of(x)
        labels += y.tolist()
    return ids, labels


# ----------------------------------------------------------------------------------------------------
# shapes, dtypes, layouts, labels, batching

@pytest.mark.parametrize("backend", BACKENDS)
def test_val_epoch_reads_every_image_once_in_folder_order_with_its_class(backend, solid):
    root, truth = solid
    loader = _loader(root, "val", backend, batch_size=5, image_size=16)
    assert loader.backend == backend
    assert loader.classes == ["class_00", "class_01", "class_02"] and loader.num_classes == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [5, 5, 2]  # 12 images: the last batch partial, not padded
    assert len(loader) == 3
    ids, labels = epoch_ids(loader)
    val_ids = sorted(i for i in truth if i >= 24)  # the val images were written after 24 train images
    assert ids == val_ids
    assert labels == [truth[i] for i in ids]
    for x, y in batches:
        assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.device.type == "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_drops_last_partial_batch_unless_asked(backend, solid):
    root, truth = solid
    dropped = _loader(root, "train", backend, batch_size=5, image_size=12)
    assert len(dropped) == 24 // 5
    sizes = [len(y) for _, y in dropped]
    assert sizes == [5] * 4
    kept = _loader(root, "train", backend, batch_size=5, image_size=12, drop_last=False)
    assert len(kept) == 5
    ids, labels = epoch_ids(kept)
    assert sorted(ids) == list(range(24))
    assert labels == [truth[i] for i in ids]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtype_and_memory_format(backend, dtype, channels_last, solid):
    root, _ = solid
    ref = next(iter(_loader(root, "val", backend, batch_size=4, image_size=24)))[0]
    x, y = next(iter(_loader(root, "val", backend, batch_size=4, image_size=24, dtype=dtype,
                             channels_last=channels_last)))
    assert x.shape == (4, 3, 24, 24) and x.dtype == dtype and y.dtype == torch.int64
    if channels_last:
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    else:
        assert x.is_contiguous()
    # the values are the float32 ones rounded to dtype (|x| < 3: bf16 keeps 8 bits -> 2**-7 * 2 = 0.016)
    torch.testing.assert_close(x.float(), ref, atol={torch.float32: 1e-6, torch.float16: 2e-3,
                                                      torch.bfloat16: 2e-2}[dtype], rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [8, 32, 57])
def test_any_resolution(backend, size, solid):
    root, _ = solid
    for split in ("train", "val"):
        x, _ = next(iter(_loader(root, split, backend, batch_size=3, image_size=size)))
        assert x.shape == (3, 3, size, size)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_mean_and_std(backend, solid):
    root, truth = solid
    x, _ = next(iter(_loader(root, "val", backend, batch_size=2, image_size=8, mean=(0, 0, 0), std=(1, 1, 1))))
    expect = np.array([colour_of(i) for i in sorted(i for i in truth if i >= 24)[:2]]) / 255
    got = x.mean(dim=(2, 3)).double().numpy()
    assert np.abs(got - expect).max() < 4 / 255


# ----------------------------------------------------------------------------------------------------
# order, seeds, shards

@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_fixes_the_order_and_epochs_differ(backend, solid):
    root, _ = solid
    kw = {"batch_size": 4, "image_size": 8, "drop_last": False}
    a = _loader(root, "train", backend, seed=3, **kw)
    first, second = epoch_ids(a)[0], epoch_ids(a)[0]
    assert sorted(first) == sorted(second) == list(range(24))
    assert first != second  # iterating again is the next epoch
    b = _loader(root, "train", backend, seed=3, **kw)
    assert epoch_ids(b)[0] == first
    b.set_epoch(1)
    assert epoch_ids(b)[0] == second
    assert epoch_ids(_loader(root, "train", backend, seed=4, **kw))[0] != first


def test_both_backends_read_the_same_order(solid):
    if not stdata.dali_available()[0]:
        pytest.skip("NVIDIA DALI is not importable")
    root, _ = solid
    orders = [epoch_ids(_loader(root, "train", b, seed=7, batch_size=4, image_size=8, drop_last=False))[0]
              for b in ("dali", "pil")]
    assert orders[0] == orders[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("split,num_shards", [("train", 3), ("train", 5), ("val", 2), ("val", 5)])
def test_shards_are_disjoint_and_cover_the_split(backend, split, num_shards, solid):
    root, truth = solid
    everyone = sorted(i for i in truth if (i < 24) == (split == "train"))
    seen = []
    for shard in range(num_shards):
        loader = _loader(root, split, backend, batch_size=2, image_size=8, shard_id=shard, num_shards=num_shards,
                         seed=5, drop_last=False)
        ids, labels = epoch_ids(loader)
        assert len(ids) == loader.size and labels == [truth[i] for i in ids]
        seen += ids
    assert sorted(seen) == everyone  # disjoint (no repeats) and complete


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_augmentation_flips_about_half_and_crops_vary(backend, tmp_path):
    # A horizontal ramp: any crop keeps the ramp's direction, a flip reverses it.
    folder = tmp_path / "train" / "ramp"
    folder.mkdir(parents=True)
    ramp = np.tile(np.linspace(0, 255, 96)[None, :, None], (64, 1, 3)).astype(np.uint8)
    for i in range(64):
        Image.fromarray(ramp).save(folder / f"{i:02d}.jpg", quality=95)
    x, _ = next(iter(_loader(tmp_path, "train", backend, batch_size=64, image_size=16, seed=1)))
    red = x[:, 0].double().mean(dim=1)  # (N, W): mean over rows
    slope = (red[:, -4:].mean(1) - red[:, :4].mean(1)).numpy()
    flipped = (slope < 0).mean()
    assert 0.25 < flipped < 0.75, f"{flipped:.2f} of the crops flipped"
    assert np.std(np.abs(slope)) > 0.05, "every crop spans the same share of the image"


# ----------------------------------------------------------------------------------------------------
# validation pixels against an independent PIL reference


def pil_reference(path, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """Decode, resize the shorter side to size / crop_fraction (antialiased bilinear), centre crop,
    normalise: CHW float64. The crop's corner is (n - size) / 2 rounded half up, as DALI rounds it."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    w, h = img.size
    short = size / crop_fraction
    nw, nh = (round(short), round(h * short / w)) if w <= h else (round(w * short / h), round(short))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size + 1) // 2, (nh - size + 1) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), np.float64) / 255
    return ((arr - MEAN) / STD).transpose(2, 0, 1)


# The tolerance, in normalised units (1 grey level = 1/(255*0.225) = 0.017). DALI and PIL decode the same
# JPEG identically here (both libjpeg-turbo: 0 difference measured), but resize with different
# antialiased linear kernels: measured DALI vs this reference on 2026-11-22 (CPU): generated images 0.018-
# 0.030 per image at 32 px, <= 0.009 at 64 px; CIFAR-10 test images at 32 px (37 -> 32) mean 0.029, worst
# 0.058; 40 ImageNet images at 224 px median 0.006. A crop shifted by one pixel gives 0.10-0.30 on the
# same images (0.26 on average for CIFAR), a missing resize, swapped channels or a wrong normalisation more.
MEAN_ABS_TOL = 0.08  # per image
MEAN_ABS_TOL_AVG = 0.05  # over the images of a test


def noise_image(seed: int, size: tuple[int, int], mode="RGB") -> Image.Image:
    """A smooth random image (natural-image-like spectrum) of ``size``."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return img.convert(mode) if mode != "RGB" else img


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [32, 64])
def test_val_pixels_match_a_pil_resize_and_centre_crop(backend, size, tmp_path):
    folder = tmp_path / "val" / "a"
    folder.mkdir(parents=True)
    shapes = [(500, 375), (375, 500), (97, 131), (64, 64), (40, 300)]
    for i, shape in enumerate(shapes):
        noise_image(i, shape).save(folder / f"{i}.jpg", quality=92)
    x, _ = next(iter(_loader(tmp_path, "val", backend, batch_size=len(shapes), image_size=size)))
    errs = [np.abs(got - pil_reference(folder / f"{i}.jpg", size)).mean() for i, got in enumerate(x.double().numpy())]
    assert max(errs) < MEAN_ABS_TOL and np.mean(errs) < MEAN_ABS_TOL_AVG, f"mean abs errors {np.round(errs, 4)}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_jpegs_decode_to_rgb(backend, mode, tmp_path):
    folder = tmp_path / "val" / "a"
    folder.mkdir(parents=True)
    noise_image(1, (80, 60), mode).save(folder / "x.jpg", quality=95)
    with Image.open(folder / "x.jpg") as im:
        assert im.mode == mode  # the file really is grayscale / CMYK
    loader = _loader(tmp_path, "val", backend, batch_size=1, image_size=32)
    assert not loader.skipped
    x, _ = next(iter(loader))
    assert x.shape == (1, 3, 32, 32)
    err = np.abs(x[0].double().numpy() - pil_reference(folder / "x.jpg", 32)).mean()
    assert err < MEAN_ABS_TOL, f"mean abs error {err:.4f}"


# ----------------------------------------------------------------------------------------------------
# real JPEGs: a subset of the CIFAR-10 JPEG folder

def _shared_data() -> Path:
    env = os.environ.get("STNAS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """train/ and test/ with the first 20 files per class in the archive (streamed, so only they are
    written); returns (root, {split: [(path, class name)]})."""
    tar_path = _shared_data() / "cifar10" / "cifar10-jpeg.tar.gz"
    if not tar_path.is_file():
        pytest.skip(f"{tar_path} is absent (set STNAS_SHARED_DATA to the folder holding cifar10/)")
    root = tmp_path_factory.mktemp("cifar")
    taken: dict[tuple[str, str], int] = {}
    index: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in index:
                continue
            key = (parts[0], parts[1])
            if taken.get(key, 0) >= 20:
                continue
            taken[key] = taken.get(key, 0) + 1
            dest = root / member.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
            index[parts[0]].append((dest, parts[1]))
    assert len(taken) == 20, f"expected 10 classes in train/ and test/ of {tar_path}, got {sorted(taken)}"
    return root, index


@pytest.mark.parametrize("backend", BACKENDS)
def test_cifar_labels_and_pixels(backend, cifar):
    root, index = cifar
    expected = sorted(index["test"], key=lambda pc: (pc[1], pc[0].name))  # class, then file name
    classes = sorted({c for _, c in expected})
    loader = _loader(root, "test", backend, batch_size=64, image_size=32, train=False)
    assert loader.classes == classes and loader.size == 200 and not loader.skipped
    got_x, got_y = [], []
    for x, y in loader:
        got_x.append(x)
        got_y += y.tolist()
    assert got_y == [classes.index(c) for _, c in expected]
    x = torch.cat(got_x).double().numpy()
    errs = [np.abs(x[i] - pil_reference(p, 32)).mean() for i, (p, _) in enumerate(expected)]
    assert max(errs) < MEAN_ABS_TOL and np.mean(errs) < MEAN_ABS_TOL_AVG, \
        f"worst {max(errs):.4f}, mean {np.mean(errs):.4f}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_cifar_train_epoch(backend, cifar):
    root, _ = cifar
    loader = _loader(root, "train", backend, batch_size=32, image_size=32, channels_last=True,
                     dtype=torch.bfloat16)
    assert len(loader) == 200 // 32
    n, counts = 0, np.zeros(10, int)
    for x, y in loader:
        assert x.shape == (32, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(x.float()).all() and x.float().abs().max() < 3
        n += len(y)
        counts += np.bincount(y.numpy(), minlength=10)
    assert n == 192 and counts.min() > 0


# ----------------------------------------------------------------------------------------------------
# bad data

def test_missing_root_and_split_name_the_path(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}.*does not exist"):
        make_loader(tmp_path / "nowhere", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"has no 'val' split.*found folders: \['train'\]"):
        make_loader(tmp_path, "val")
    with pytest.raises(DataError, match=f"{tmp_path / 'train'} has no class folders"):
        make_loader(tmp_path, "train")


def test_a_split_without_any_readable_image_is_an_error(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=f"{tmp_path / 'train'}: no readable image"):
        make_loader(tmp_path, "train")


def _bad_folder(root: Path) -> dict[str, Path]:
    """Three good images in class 'a' and 'c', an empty class 'b', and one file of each bad kind in 'a'."""
    truth = write_solid_folder(root, {"val": [3, 0, 2]}, splits=("val",))
    a = root / "val" / "class_00"
    good = (a / "img_000.jpg").read_bytes()
    bad = {"text": a / "readme.txt", "fake_jpeg": a / "fake.jpg", "truncated": a / "truncated.jpg",
           "empty": a / "empty.jpg", "truncated_png": a / "cut.png", "corrupt": a / "zz_corrupt.jpg"}
    bad["text"].write_text("not an image")
    bad["fake_jpeg"].write_text("<html>404 not found</html>")
    noise_image(3, (120, 90)).save(a / "big.jpg", quality=90)
    big = (a / "big.jpg").read_bytes()
    (a / "big.jpg").unlink()
    bad["truncated"].write_bytes(big[: len(big) // 2])
    bad["empty"].write_bytes(b"")
    noise_image(4, (30, 20)).save(bad["truncated_png"])
    bad["truncated_png"].write_bytes(bad["truncated_png"].read_bytes()[:-40])
    # A JPEG whose header and end marker are intact but whose data is not: passes the scan.
    bad["corrupt"].write_bytes(good[:30] + b"\x00" * 200 + good[-2:])
    return {"truth": truth, **bad}


def test_scan_skips_bad_files_and_counts_them(tmp_path, caplog):
    _bad_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="stnas.data"):
        split = ImageFolderSplit.scan(tmp_path, "val")
    assert split.classes == ["class_00", "class_01", "class_02"]
    assert dict(split.skipped) == {"not an image (extension)": 1, "not an image (content)": 2, "truncated": 2,
                                   "empty class": 1}
    kept = {Path(f).name for f in split.files}
    assert kept == {"img_000.jpg", "img_001.jpg", "img_002.jpg", "zz_corrupt.jpg"}  # class a; c has 000, 001
    assert len(split.files) == 6 and split.labels == [0, 0, 0, 0, 2, 2]  # class 'b' keeps index 1
    text = caplog.text
    assert "class_01" in text and "hold no image" in text and "skipped 5 file(s)" in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_that_passes_the_scan_but_does_not_decode_is_named(backend, tmp_path):
    bad = _bad_folder(tmp_path)
    loader = _loader(tmp_path, "val", backend, batch_size=2, image_size=16)
    assert loader.skipped["truncated"] == 2 and loader.skipped["empty class"] == 1
    with pytest.raises(DataError, match=f"{bad['corrupt']}: cannot decode"):
        list(loader)


@pytest.mark.parametrize("backend", BACKENDS)
def test_skipping_leaves_a_working_loader(backend, tmp_path):
    bad = _bad_folder(tmp_path)
    bad["corrupt"].unlink()
    ids, labels = epoch_ids(_loader(tmp_path, "val", backend, batch_size=2, image_size=16))
    assert ids == list(range(5)) and labels == [bad["truth"][i] for i in ids]


def test_arguments_are_checked_at_the_edge(solid):
    root, _ = solid
    for kwargs, pattern in [({"dtype": torch.int8}, "dtype"), ({"batch_size": 0}, "batch_size"),
                            ({"shard_id": 2, "num_shards": 2}, "shard_id"), ({"backend": "opencv"}, "backend"),
                            ({"crop_fraction": 1.5}, "crop_fraction"), ({"seed": -1}, "seed"),
                            ({"std": (1, 0, 1)}, "std")]:
        with pytest.raises(DataError, match=pattern):
            make_loader(root, "val", **kwargs)


def test_auto_falls_back_to_pil_with_a_warning_when_dali_is_missing(solid, monkeypatch, caplog):
    import stnas.data.loader as loader_mod

    root, _ = solid
    monkeypatch.setattr(loader_mod, "dali_available", lambda: (False, "ImportError: no module named nvidia"))
    with caplog.at_level(logging.WARNING, logger="stnas.data"):
        loader = make_loader(root, "val", batch_size=4, image_size=8, num_threads=1)
    assert loader.backend == "pil" and "DALI cannot be imported" in caplog.text
    assert sum(len(y) for _, y in loader) == 12
    with pytest.raises(DataError, match="backend='dali'.*cannot be imported"):
        make_loader(root, "val", backend="dali")


# ----------------------------------------------------------------------------------------------------
# the demo dataset

def test_demo_dataset_is_written_once_and_reused(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    monkeypatch.setenv("STNAS_CACHE", str(tmp_path / "cache"))
    root = stdata.demo_dataset()
    assert root.parent == tmp_path / "cache"
    files = {s: sorted((root / s).glob("*/*.jpg")) for s in ("train", "val")}
    digits = load_digits()
    assert len(files["train"]) + len(files["val"]) == len(digits.images) == 1797
    assert 0.18 < len(files["val"]) / 1797 < 0.22
    for s in ("train", "val"):
        assert sorted(p.name for p in (root / s).iterdir()) == [str(d) for d in range(10)]
    assert not {p.name for p in files["train"]} & {p.name for p in files["val"]}
    with Image.open(files["val"][0]) as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
    stamps = {p: p.stat().st_mtime_ns for p in [root / ".complete", files["train"][0], files["val"][-1]]}
    assert stdata.demo_dataset() == root
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # an interrupted write (no completion marker) is redone
    (root / ".complete").unlink()
    files["val"][0].unlink()
    assert stdata.demo_dataset() == root
    assert files["val"][0].is_file() and (root / ".complete").is_file()


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return stdata.demo_dataset(tmp_path_factory.mktemp("demo") / "digits")


def test_demo_images_are_the_digits_with_their_labels(demo_root):
    from sklearn.datasets import load_digits

    root = demo_root
    digits = load_digits()
    # each file's name is its index in scikit-learn's order; its folder must be that digit's label
    for path in sorted((root / "val").glob("*/*.jpg"))[:40]:
        k = int(path.stem)
        assert int(path.parent.name) == digits.target[k]
        with Image.open(path) as im:
            small = np.asarray(im.convert("L").resize((8, 8), Image.BOX), np.float64) / 255 * 16
        assert np.abs(small - digits.images[k]).mean() < 1.5  # of 16 levels


@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_dataset_loads_through_the_same_pipeline(backend, demo_root):
    root = demo_root
    loader = _loader(root, "val", backend, batch_size=128, image_size=32)
    assert loader.num_classes == 10 and loader.size == len(list((root / "val").glob("*/*.jpg")))
    assert sum(len(y) for _, y in loader) == loader.size and not loader.skipped
