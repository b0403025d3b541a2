"""Your own data: an `npz` file and an `image_folder` (images + CSV) made here load with the tasks the
suite declares, are cached, run through a cell, and broken ones are refused with the reason."""


from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from bench import cli
from bench.config import SuiteError, load_suite
from bench.data import DATASETS, load_taskset
from bench.grid import expand

# torchvision's PNG writer, which makes the test images, warns that its codecs are deprecated
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

TASKS = {"digit": {"kind": "multiclass", "classes": 10, "invariant": ["hflip"]},
         "odd": {"kind": "binary", "array": "y", "column": 1, "invariant": ["hflip"]},
         "size": {"kind": "regression", "dim": 2, "invariant": ["hflip"]}}


def make_npz(path, n: int = 40, seed: int = 0, **replace):
    """n 8x8 RGB images stored channels-last, labels digit (n,), y (n, 2) with column 1 = odd, size (n, 2)."""
    rng = np.random.default_rng(seed)
    digit = np.arange(n) % 10
    arrays = {"x": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), "digit": digit,
              "y": np.stack([digit, digit % 2], 1), "size": rng.random((n, 2)).astype(np.float32)}
    arrays.update(replace)
    np.savez(path, **arrays)
    return arrays


def npz_entry(file, tasks=TASKS, **options):
    return {"dataset": "npz", "val_size": 8, "options": {"file": str(file), "tasks": tasks, **options}}


def suite_with(tiny_suite, entry, **train):
    raw = tiny_suite(datasets={"mine": entry})
    raw["train"].update(train)
    return raw


def test_npz_loads_the_declared_tasks(tmp_path, tiny_suite, write_suite):
    arrays = make_npz(tmp_path / "mine.npz")
    ds = load_suite(write_suite(suite_with(tiny_suite, npz_entry(tmp_path / "mine.npz"), crop_pad=0))).datasets[0]
    assert (ds.name, ds.registered, ds.tasks) == ("mine", "npz", ("digit", "odd", "size"))
    data = load_taskset(ds)
    assert len(data.train) + len(data.val) + len(data.test) == 40 and len(data.test) == 8  # test_fraction 0.2
    assert data.train.x.shape[1:] == (3, 8, 8) and data.train.x.dtype == torch.uint8
    assert [data.specs[t].kind for t in ("digit", "odd", "size")] == ["multiclass", "binary", "regression"]
    # every train image is one of the file's, channels-last turned channels-first, with its own labels
    source = torch.from_numpy(arrays["x"]).permute(0, 3, 1, 2)
    for i in range(len(data.train)):
        j = int(np.flatnonzero((source == data.train.x[i]).flatten(1).all(1))[0])
        assert data.train.y["digit"][i] == arrays["digit"][j] and data.train.y["odd"][i] == arrays["digit"][j] % 2
        assert torch.equal(data.train.y["size"][i], torch.from_numpy(arrays["size"][j]))
    assert len(set(data.test.y["digit"].tolist())) == 8  # stratified: 8 of 40, 4 per digit -> 8 digits once


def test_npz_with_a_test_file_and_float_images(tmp_path, tiny_suite, write_suite):
    make_npz(tmp_path / "train.npz", x=np.random.default_rng(1).random((40, 1, 8, 8)))  # NCHW, [0, 1]
    make_npz(tmp_path / "test.npz", n=20, x=np.full((20, 8, 8), 255.0))  # (N, H, W), [0, 255]
    entry = npz_entry(tmp_path / "train.npz", test_file=str(tmp_path / "test.npz"))
    data = load_taskset(load_suite(write_suite(suite_with(tiny_suite, entry))).datasets[0])
    assert len(data.test) == 20 and (data.test.x == 255).all() and data.train.x.shape[1:] == (1, 8, 8)


def test_npz_is_cached(tmp_path, tiny_suite, write_suite):
    make_npz(tmp_path / "mine.npz")
    ds = load_suite(write_suite(suite_with(tiny_suite, npz_entry(tmp_path / "mine.npz")))).datasets[0]
    first = load_taskset(ds)
    cache = list((tmp_path / "cache").glob("npz-*.pt"))
    assert len(cache) == 1
    again = load_taskset(ds)
    assert torch.equal(first.train.x, again.train.x) and list((tmp_path / "cache").glob("npz-*.pt")) == cache


@pytest.mark.parametrize("arrays, message", [
    ({"digit": np.arange(40) % 10 + 3}, r"array 'digit': task digit, item 7: label 10 is not a class index in 0..9"),
    ({"digit": np.arange(39) % 10}, r"array 'digit': task digit has 39 labels for 40 images"),
    ({"digit": np.full(40, 1.5)}, r"task digit, item 0: label 1.5 is not a class index in 0..9"),
    ({"size": np.ones((40, 3))}, r"task size \(regression, dim 2\) expects numbers of shape \(40,\) or \(40, 2\)"),
    ({"size": np.full((40, 2), np.nan)}, r"task size, item 0: value \[nan, nan\] is not finite"),
    ({"x": np.zeros((40, 8, 6, 3), np.uint8)}, r"expected square images with 1 or 3 channels"),
    ({"x": np.full((40, 8, 8), 300.0)}, r"pixel values must be uint8, or finite numbers in \[0, 1\] or \[0, 255\]"),
    ({"x": np.zeros((40, 3, 8, 3), np.uint8)}, r"cannot tell channels from the shape .* set the option layout"),
    ({"y": np.arange(40)}, r"tasks.odd.column 1 needs a 2-D array with that column, got shape \(40,\)"),
])
def test_broken_npz_is_refused_with_the_reason(tmp_path, tiny_suite, write_suite, arrays, message):
    make_npz(tmp_path / "bad.npz", **arrays)
    ds = load_suite(write_suite(suite_with(tiny_suite, npz_entry(tmp_path / "bad.npz")))).datasets[0]
    with pytest.raises(ValueError, match=message) as err:
        load_taskset(ds)
    assert str(tmp_path / "bad.npz") in str(err.value)  # the error names the file


def test_npz_missing_file_and_array(tmp_path, tiny_suite, write_suite):
    ds = load_suite(write_suite(suite_with(tiny_suite, npz_entry("nowhere.npz")))).datasets[0]
    with pytest.raises(FileNotFoundError, match=r"nowhere.npz: not found \(relative paths are read from the data root"):
        load_taskset(ds, root=tmp_path)
    make_npz(tmp_path / "mine.npz")
    entry = npz_entry(tmp_path / "mine.npz", images="pixels")
    with pytest.raises(ValueError, match=r"no array 'pixels' for the images \(options.images\); arrays: x, digit, y, size"):
        load_taskset(load_suite(write_suite(suite_with(tiny_suite, entry))).datasets[0])


@pytest.mark.parametrize("tasks, message", [
    (None, r"datasets\.mine\.options\.tasks: required"),
    ({"digit": {"kind": "multi"}}, r"datasets\.mine\.options\.tasks\.digit\.kind: 'multi' unknown; valid: multiclass, binary, regression"),
    ({"digit": {"kind": "multiclass"}}, r"tasks\.digit\.classes: expected a whole number >= 2"),
    ({"digit": {"kind": "multiclass", "classes": 3, "class_names": ["a", "b"]}}, r"tasks\.digit\.class_names: 2 names for 3 classes"),
    ({"digit": {"kind": "binary", "classes": 3}}, r"tasks\.digit\.classes: a binary task has 2 classes"),
    ({"digit": {"kind": "multiclass", "classes": 10, "colour": 1}}, r"tasks\.digit\.colour: unknown key; valid: kind, classes"),
    ({"digit": {"kind": "multiclass", "classes": 10, "column": "0"}}, r"tasks\.digit\.column: expected int, got '0'"),
    ({"digit": {"kind": "multiclass", "classes": 10, "invariant": ["spin"]}}, r"tasks\.digit\.invariant: expected a list of hflip"),
])
def test_bad_task_declarations_are_refused_when_the_suite_loads(tmp_path, tiny_suite, write_suite, tasks, message):
    entry = npz_entry(tmp_path / "mine.npz", tasks=tasks)
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(suite_with(tiny_suite, entry)))


def test_an_orientation_op_on_undeclared_labels_is_refused_before_training(tmp_path, tiny_suite, write_suite):
    tasks = {"digit": {"kind": "multiclass", "classes": 10}}  # no `invariant`: a mirror may change the label
    suite = load_suite(write_suite(suite_with(tiny_suite, npz_entry(tmp_path / "mine.npz", tasks=tasks), flip=True)))
    with pytest.raises(SuiteError, match=r"strategies\.hard_share on dataset mine: train\.flip \(hflip\): dataset "
                                         r"'mine' declares no label map for hflip on task 'digit'"):
        expand(suite)


def test_npz_cells_run_and_their_keys_cover_the_declared_kinds(tmp_path, tiny_suite, write_suite):
    make_npz(tmp_path / "mine.npz")
    path = write_suite(suite_with(tiny_suite, npz_entry(tmp_path / "mine.npz")))
    (cell,) = expand(load_suite(path))
    assert cell.name == "mine__hard_share__seed0"
    assert {"data/npz.py", "kinds/classification.py", "kinds/regression.py"} <= set(cell.code_files())
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(path), "--device", "cpu", *roots]) == 0
    record = json.loads((tmp_path / "results" / "tiny" / cell.name / "record.json").read_text())
    assert record["status"] == "done" and set(record["test"]) == {"digit", "odd", "size"}


def test_npz_part_of_a_union(tmp_path, tiny_suite, write_suite):
    make_npz(tmp_path / "mine.npz", x=np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8))
    part = {"name": "npz", "val_size": 8, "options": {"file": str(tmp_path / "mine.npz"), "tasks": TASKS},
            "tasks": ["digit"]}
    other = {"name": "synthetic", "tasks": ["quadrant"], "val_size": 8,
             "options": {"n_train": 40, "n_test": 16, "image_size": 8}}
    raw = tiny_suite(datasets={"both": {"union": [part, other]}})
    (cell,) = expand(load_suite(write_suite(raw)))
    assert cell.tasks == ("digit", "quadrant") and "data/npz.py" in cell.code_files()
    data = load_taskset(cell.dataset)
    assert data.train.labelled["digit"].sum() == 24 and data.train.labelled["quadrant"].sum() == 32


# ---- image_folder ---------------------------------------------------------------------------------
def make_folder(root, n: int = 30, sizes=None, rows=None, header="file,shape,area,split"):
    """n 8x8 RGB PNGs; CSV columns: file, shape (a class name), area (a number), split (every 5th test)."""
    folder = root / "pics"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = [header]
    for i in range(n):
        h, w = (sizes or {}).get(i, (8, 8))
        image = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
        write_png(image, str(folder / f"im{i}.png"))
        lines.append(f"im{i}.png,{['circle', 'square', 'star'][i % 3]},{i / 10},{'test' if i % 5 == 0 else 'train'}")
    (folder / "labels.csv").write_text("\n".join(rows if rows is not None else lines) + "\n")
    return folder


FOLDER_TASKS = {"shape": {"kind": "multiclass", "class_names": ["circle", "square", "star"], "invariant": ["hflip"]},
                "area": {"kind": "regression", "invariant": ["hflip"]}}


def folder_entry(folder, **options):
    return {"dataset": "image_folder", "val_size": 6,
            "options": {"folder": str(folder), "tasks": FOLDER_TASKS, **options}}


def test_image_folder_loads_pixels_labels_and_split(tmp_path, tiny_suite, write_suite):
    folder = make_folder(tmp_path)
    data = load_taskset(load_suite(write_suite(suite_with(tiny_suite, folder_entry(folder)))).datasets[0])
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 24  # the split column decides
    from torchvision.io import decode_png, read_file
    first = decode_png(read_file(str(folder / "im0.png")))  # im0 is a test row: the first test item
    assert torch.equal(data.test.x[0], first)
    assert data.test.y["shape"].tolist() == [0, 2, 1, 0, 2, 1]  # class names -> indices, rows 0, 5, 10, ...
    assert data.test.y["area"][:, 0].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])


def test_image_folder_grey_and_resized(tmp_path, tiny_suite, write_suite):
    folder = make_folder(tmp_path, sizes={3: (10, 12)})
    entry = folder_entry(folder, channels=1, size=6)
    data = load_taskset(load_suite(write_suite(suite_with(tiny_suite, entry))).datasets[0])
    assert data.train.x.shape[1:] == (1, 6, 6)


@pytest.mark.parametrize("edit, message", [
    (dict(header="file,kind,area,split"), r"labels.csv: missing column\(s\) shape; columns: file, kind, area, split"),
    (dict(sizes={4: (10, 8)}), r"im4.png: \(10, 8\) pixels, but im0.png has \(8, 8\); give the images one size"),
    (dict(rows=["file,shape,area", "im0.png,circle,0.1", "im1.png,hexagon,0.2"]),
     r"task shape, row 1: 'hexagon' is neither a class name \(circle, square, star\) nor a class index"),
    (dict(rows=["file,shape,area", "im0.png,circle,0.1", "gone.png,star,0.2"]),
     r"1 listed image\(s\) not found, first .*gone.png"),
    (dict(rows=["file,shape,area,split", "im0.png,circle,0.1,val", "im1.png,star,0.2,train"]),
     r"column split holds 'val'; expected train or test"),
    (dict(rows=["file,shape,area", "im0.png,7,0.1", "im1.png,star,0.2"]),
     r"column shape: task shape, item 0: label 7.0 is not a class index in 0..2"),
])
def test_broken_image_folder_is_refused_with_the_reason(tmp_path, tiny_suite, write_suite, edit, message):
    folder = make_folder(tmp_path, **edit)
    ds = load_suite(write_suite(suite_with(tiny_suite, folder_entry(folder)))).datasets[0]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_taskset(ds)


def test_user_datasets_are_registered_with_declared_tasks():
    assert {"npz", "image_folder"} <= set(DATASETS.names())
    decl = DATASETS.get("image_folder").declare({"tasks": FOLDER_TASKS})
    assert decl.kinds == {"shape": "multiclass", "area": "regression"} and set(decl.label_maps["shape"]) == {"hflip"}
