"""`image_folder`: your own image files plus a CSV of labels, with the tasks declared in the suite.

    datasets:
      faces:
        dataset: image_folder
        options:
          folder: faces                  # relative to the data root, or absolute
          labels: labels.csv             # in the folder (or a path); default labels.csv
          channels: 3                    # decode as RGB (3) or grey (1)
          size: null                     # resize every image to size x size (antialiased); null: as stored
          test_fraction: 0.2             # without a `split` column, this stratified share is the test set
          tasks:
            smiling: {kind: binary, class_names: [no, yes], invariant: [hflip]}
            age: {kind: regression, column: age_years}

The CSV has a header, a `file` column (image paths relative to the folder), one column per task
(the task's name, or its `column`), and optionally a `split` column of `train` / `test`. Class labels
are class indices, or class names where the task declares `class_names`. Images are decoded by
torchvision (PNG, JPEG, ...) and must share one square size unless `size` is set. Task keys and
checks: bench/data/declared.py. Decoded tensors are cached like the built-in datasets', keyed by the
CSV's and the images' paths, sizes and modification times and the options.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.data import Declaration, Pool, Split, cached, carve, dataset
from bench.data import declared as D

SOURCE_KEYS = {"column": str}  # per task: its CSV column, when it is not the task's name
SPLIT_SEED = 0  # the fixed carve of the test set when the CSV has no split column


def _declare(options: dict[str, Any]) -> Declaration:
    return D.declare(options, SOURCE_KEYS)


@dataset("image_folder", declare=_declare)
def image_folder(root: Path, download: bool, *, folder: str = "", labels: str = "labels.csv",
                 tasks: dict[str, dict[str, Any]] | None = None, channels: int = 3, size: int | None = None,
                 test_fraction: float = 0.2) -> Pool:
    """`download` is ignored: your own data is never downloaded."""
    options = {"folder": folder, "labels": labels, "tasks": tasks, "channels": channels, "size": size,
               "test_fraction": test_fraction}
    if not folder:
        raise ValueError("image_folder: options.folder is required (relative to the data root or absolute)")
    if channels not in (1, 3) or (size is not None and size < 1) or not 0 < test_fraction < 1:
        raise ValueError(f"image_folder: channels must be 1 or 3 (got {channels}), size >= 1 or null (got {size}), "
                         f"test_fraction in (0, 1) (got {test_fraction})")
    base = D.resolve(root, folder)
    csv = D.resolve(base, labels)
    specs = D.specs(options)
    table = _table(csv, specs, options)
    files = [base / f for f in table["file"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{csv}: {len(missing)} listed image(s) not found, first {missing[0]}")
    stamp = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in [csv, *files]]
    arrays = cached(root, "image_folder", json.dumps([options, stamp]), lambda: _decode(files, table, specs, options, csv))
    split = Split(arrays["x"], {t: arrays[t] for t in specs})
    stratify = next((t for t, s in specs.items() if s.kind != "regression"), None)
    if "split" in table:
        test = torch.tensor((table["split"] == "test").to_numpy())
        train, test = split.take(torch.nonzero(~test).squeeze(1)), split.take(torch.nonzero(test).squeeze(1))
    else:
        labels_ = split.y[stratify] if stratify else torch.zeros(len(split), dtype=torch.long)
        train, test = carve(split, labels_, int(round(test_fraction * len(split))),
                            torch.Generator().manual_seed(SPLIT_SEED))
    return Pool(train=train, test=test, specs=specs, stratify=stratify)


def _table(csv: Path, specs: dict, options: dict[str, Any]) -> pd.DataFrame:
    """The CSV with its columns checked, class names turned into indices, and only the columns used."""
    try:
        table = pd.read_csv(csv, dtype={"file": str, "split": str})
    except (OSError, ValueError) as err:
        raise ValueError(f"{csv}: not a readable CSV ({err})") from None
    columns = {t: options["tasks"][t].get("column", t) for t in specs}
    missing = [c for c in ["file", *columns.values()] if c not in table]
    if missing:
        raise ValueError(f"{csv}: missing column(s) {', '.join(missing)}; columns: {', '.join(table.columns)} "
                         "(a task reads the column of its name, or tasks.<task>.column)")
    if "split" in table and not table["split"].isin(["train", "test"]).all():
        bad = table.loc[~table["split"].isin(["train", "test"]), "split"].iloc[0]
        raise ValueError(f"{csv}: column split holds {bad!r}; expected train or test")
    if "split" in table and not {"train", "test"} <= set(table["split"]):
        raise ValueError(f"{csv}: column split needs both train and test rows")
    out = table[["file"] + (["split"] if "split" in table else [])].copy()
    for t, spec in specs.items():
        out[t] = _class_indices(table[columns[t]], spec, csv) if spec.class_names else table[columns[t]]
    return out


def _class_indices(values: pd.Series, spec, csv: Path) -> pd.Series:
    """Class names (or indices) of a task with class_names -> indices; unknown names are errors."""
    index = {n: i for i, n in enumerate(spec.class_names)}
    known = values.astype(str).map(index)
    as_number = pd.to_numeric(values, errors="coerce")
    out = known.fillna(as_number)
    if out.isna().any():
        i = int(np.flatnonzero(out.isna())[0])
        raise ValueError(f"{csv}: task {spec.name}, row {i}: {values.iloc[i]!r} is neither a class name "
                         f"({', '.join(spec.class_names)}) nor a class index")
    return out


def _decode(files: list[Path], table: pd.DataFrame, specs: dict, options: dict[str, Any], csv: Path) -> dict:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    # torchvision >= 0.29 flags its decoders as deprecated (see bench/data/cifar.py, which keeps them too)
    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    mode = ImageReadMode.RGB if options["channels"] == 3 else ImageReadMode.GRAY
    images = []
    for path in files:
        try:
            im = decode_image(str(path), mode=mode)
        except RuntimeError as err:
            raise ValueError(f"{path}: not a decodable image ({err})") from None
        if options["size"] is not None:
            im = resize(im, [options["size"]] * 2, antialias=True)
        elif images and im.shape != images[0].shape:
            raise ValueError(f"{path}: {tuple(im.shape[1:])} pixels, but {files[0].name} has "
                             f"{tuple(images[0].shape[1:])}; give the images one size, or set options.size")
        images.append(im)
    x = D.images(torch.stack(images).numpy(), f"{csv}: images")
    return {"x": x, **{t: D.targets(table[t].to_numpy(), s, len(x), f"{csv}: column {t}") for t, s in specs.items()}}
