"""`npz`: your own images and labels in a NumPy `.npz` file, with the tasks declared in the suite.

    datasets:
      seed000:
        dataset: npz
        options:
          file: dataset_dev_3000.npz     # relative to the data root, or absolute
          images: X                      # the array of images (default "x")
          test_file: null                # a second file with the same arrays as the test set;
          test_fraction: 0.2             # without one, this stratified share of `file` is the test set
          tasks:
            a: {kind: multiclass, classes: 10, array: y, column: 0}
            b: {kind: multiclass, classes: 32, array: y, column: 1}
            c: {kind: regression, array: y, column: 2, invariant: [hflip]}

Images: (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels (`layout: NCHW | NHWC` where
the shape cannot tell), uint8 or numbers in [0, 1] or [0, 255]. Each task reads array `array`
(default: the task's name), or one `column` of a 2-D array. Task keys and checks: bench/data/declared.py.
The decoded tensors are cached like the built-in datasets', keyed by the files' paths, sizes and
modification times and the options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import Declaration, Pool, Split, cached, carve, dataset
from bench.data import declared as D

SOURCE_KEYS = {"array": str, "column": int}  # per task: which array, and which column of a 2-D one
SPLIT_SEED = 0  # the fixed carve of the test set when there is no test_file


def _declare(options: dict[str, Any]) -> Declaration:
    return D.declare(options, SOURCE_KEYS)


@dataset("npz", declare=_declare)
def npz(root: Path, download: bool, *, file: str = "", tasks: dict[str, dict[str, Any]] | None = None,
        images: str = "x", test_file: str | None = None, test_fraction: float = 0.2, layout: str = "auto") -> Pool:
    """`download` is ignored: your own data is never downloaded."""
    options = {"file": file, "tasks": tasks, "images": images, "test_file": test_file,
               "test_fraction": test_fraction, "layout": layout}
    if not file:
        raise ValueError("npz: options.file is required (the .npz file, relative to the data root or absolute)")
    if layout not in ("auto", "NCHW", "NHWC") or not 0 < test_fraction < 1:
        raise ValueError(f"npz: layout must be auto, NCHW or NHWC (got {layout!r}) and test_fraction in (0, 1) "
                         f"(got {test_fraction})")
    specs = D.specs(options)
    paths = [D.resolve(root, f) for f in (file, test_file) if f]
    key = json.dumps([options, [(str(p.resolve()), p.stat().st_size, int(p.stat().st_mtime)) for p in paths]])
    arrays = cached(root, "npz", key, lambda: {f"{i}_{k}": v for i, p in enumerate(paths)
                                              for k, v in _read(p, options, specs).items()})
    splits = [Split(arrays[f"{i}_x"], {t: arrays[f"{i}_{t}"] for t in specs}) for i in range(len(paths))]
    stratify = next((t for t, s in specs.items() if s.kind != "regression"), None)
    if len(splits) == 1:
        labels = splits[0].y[stratify] if stratify else torch.zeros(len(splits[0]), dtype=torch.long)
        n_test = int(round(test_fraction * len(splits[0])))
        splits = list(carve(splits[0], labels, n_test, torch.Generator().manual_seed(SPLIT_SEED)))
    return Pool(train=splits[0], test=splits[1], specs=specs, stratify=stratify)


def _read(path: Path, options: dict[str, Any], specs: dict) -> dict[str, torch.Tensor]:
    """x and one tensor per task from one .npz file, each checked (errors name the file and array)."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    with z:
        if options["images"] not in z.files:
            raise ValueError(f"{path}: no array {options['images']!r} for the images (options.images); "
                             f"arrays: {', '.join(z.files)}")
        out = {"x": D.images(z[options["images"]], f"{path}: array {options['images']!r}", options["layout"])}
        for t, spec in specs.items():
            body = options["tasks"][t]
            name = body.get("array", t)
            if name not in z.files:
                raise ValueError(f"{path}: no array {name!r} for task {t} (set tasks.{t}.array); "
                                 f"arrays: {', '.join(z.files)}")
            y, where = z[name], f"{path}: array {name!r}"
            if "column" in body:
                if y.ndim != 2 or not 0 <= body["column"] < y.shape[1]:
                    raise ValueError(f"{where}: tasks.{t}.column {body['column']} needs a 2-D array with that "
                                     f"column, got shape {y.shape}")
                y, where = y[:, body["column"]], f"{where}, column {body['column']}"
            out[t] = D.targets(y, spec, len(out["x"]), where)
    return out
