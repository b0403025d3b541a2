"""What `npz` and `image_folder` share: datasets whose tasks the suite declares (your own data).

The suite names each task, its kind and where its labels come from in the dataset's options:

    datasets:
      faces:                              # the entry's id (cell names, reports)
        dataset: npz                      # or image_folder
        options:
          file: faces.npz                 # relative to the data root (BENCH_DATA_DIR), or absolute
          tasks:
            identity: {kind: multiclass, classes: 40}
            smiling: {kind: binary, class_names: [no, yes], invariant: [hflip]}
            age: {kind: regression}       # dim: 1 (targets (N,) or (N, dim))

Task keys: `kind` (multiclass | binary | regression); `classes` (multiclass; or the length of
`class_names`); `class_names`; `dim` (regression, default 1); `invariant`: the orientation ops
(hflip, vflip, rot90, rotate) that keep this task's labels, which become its label maps (`keep`),
so the augmentation pipeline allows them; plus each loader's own source keys (npz: `array`,
`column`; image_folder: `column`). Nothing is declared invariant by default, so `flip: true` (a
train default) is refused on such data until a task says `invariant: [hflip]` or the suite says
`flip: false`.

The declaration is read when the suite loads (`declare`), so validation, the tasks of an entry or a
union part, and each cell's key work as for the built-in datasets. The arrays are checked when they
load (`images`, `targets`): shapes, counts, label ranges and values, each error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.augment import ORIENTATION_OPS, keep
from bench.data import Declaration
from bench.kinds import TaskSpec, make_spec

KINDS = ("multiclass", "binary", "regression")
TASK_KEYS = ("kind", "classes", "class_names", "dim", "invariant")


def declare(options: dict[str, Any], source_keys: dict[str, type]) -> Declaration:
    """The Declaration of `options["tasks"]`; ValueError starting with the key path under options.

    source_keys: the loader's own per-task keys and their types (e.g. {"array": str, "column": int})."""
    tasks = options.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError("tasks: required; a mapping task -> {kind: multiclass | binary | regression, ...}")
    kinds, maps = {}, {}
    for name, body in tasks.items():
        spec, invariant = _task(str(name), body, source_keys)
        kinds[spec.name], maps[spec.name] = spec.kind, {op: keep for op in invariant}
    return Declaration(kinds, maps)


def specs(options: dict[str, Any]) -> dict[str, TaskSpec]:
    """The TaskSpecs of declared tasks (options already checked by `declare`)."""
    return {str(name): _task(str(name), body, None)[0] for name, body in options["tasks"].items()}


def _task(name: str, body: Any, source_keys: dict[str, type] | None) -> tuple[TaskSpec, list[str]]:
    where = f"tasks.{name}"
    if not isinstance(body, dict):
        raise ValueError(f"{where}: expected a mapping with keys from {', '.join(TASK_KEYS)}, got {body!r}")
    for key, value in body.items() if source_keys is not None else ():
        if key in source_keys:
            if isinstance(value, bool) or not isinstance(value, source_keys[key]):
                raise ValueError(f"{where}.{key}: expected {source_keys[key].__name__}, got {value!r}")
        elif key not in TASK_KEYS:
            raise ValueError(f"{where}.{key}: unknown key; valid: {', '.join(TASK_KEYS + tuple(source_keys))}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}.kind: {kind!r} unknown; valid: {', '.join(KINDS)}")
    names = body.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise ValueError(f"{where}.class_names: expected a list of names, got {names!r}")
    fields: dict[str, Any] = {"name": name, "class_names": tuple(str(n) for n in names)}
    if kind == "multiclass":
        classes = body.get("classes", len(names) or None)
        if not _whole(classes) or classes < 2:
            raise ValueError(f"{where}.classes: expected a whole number >= 2 (or give class_names), got {classes!r}")
        fields["classes"] = int(classes)
    if kind == "binary" and body.get("classes", 2) != 2:
        raise ValueError(f"{where}.classes: a binary task has 2 classes, got {body['classes']!r}")
    if names and len(names) != fields.get("classes", 2 if kind == "binary" else len(names)):
        raise ValueError(f"{where}.class_names: {len(names)} names for {fields.get('classes', 2)} classes")
    if kind == "regression":
        dim = body.get("dim", 1)
        if not _whole(dim) or dim < 1:
            raise ValueError(f"{where}.dim: expected a whole number >= 1, got {dim!r}")
        fields["dim"] = int(dim)
    invariant = body.get("invariant", [])
    if not isinstance(invariant, list) or any(op not in ORIENTATION_OPS for op in invariant):
        raise ValueError(f"{where}.invariant: expected a list of {', '.join(ORIENTATION_OPS)}, got {invariant!r}")
    return make_spec(kind, **fields), list(invariant)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def resolve(root: Path, name: str) -> Path:
    """A file or folder named in options: absolute, or relative to the data root; FileNotFoundError if absent."""
    path = Path(name) if Path(name).is_absolute() else root / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (relative paths are read from the data root {root}; "
                                "set BENCH_DATA_DIR or give an absolute path)")
    return path


def images(x: np.ndarray, where: str, layout: str = "auto") -> torch.Tensor:
    """An image array -> (N, C, H, W) uint8. x: (N, H, W), (N, H, W, C) or (N, C, H, W), C in 1 or 3;
    uint8, or numbers in [0, 1] (scaled by 255) or in [0, 255] (rounded). ValueError naming `where`."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[-1] in (1, 3)
        if layout == "auto" and first == last:
            raise ValueError(f"{where}: cannot tell channels from the shape {x.shape}; set the option "
                             "layout: NCHW or NHWC")
        if layout == "NHWC" or (layout == "auto" and last):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{where}: expected images (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    if x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise ValueError(f"{where}: expected square images with 1 or 3 channels, got (N, C, H, W) = {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 255:
            raise ValueError(f"{where}: pixel values must be uint8, or finite numbers in [0, 1] or [0, 255] "
                             f"(got {x.dtype}, range {np.nanmin(x)}..{np.nanmax(x)})")
        x = np.round(x * 255 if x.max() <= 1 else x).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(x))


def targets(y: np.ndarray, spec: TaskSpec, n: int, where: str) -> torch.Tensor:
    """One task's label array -> its kind's layout, checked: count n, shape, whole class indices in
    range, finite regression values. ValueError naming `where`, the task and the first bad item."""
    y = np.asarray(y)
    if len(y) != n:
        raise ValueError(f"{where}: task {spec.name} has {len(y)} labels for {n} images")
    if spec.kind == "regression":
        y = y.reshape(n, -1) if y.ndim <= 2 else y
        if y.shape != (n, spec.dim) or not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"{where}: task {spec.name} (regression, dim {spec.dim}) expects numbers of shape "
                             f"({n},) or ({n}, {spec.dim}), got {y.dtype} {y.shape}")
        bad = np.flatnonzero(~np.isfinite(y).all(1))
        if len(bad):
            raise ValueError(f"{where}: task {spec.name}, item {bad[0]}: value {y[bad[0]].tolist()} is not finite")
        return torch.from_numpy(y.astype(np.float32))
    y = y.reshape(n) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{where}: task {spec.name} ({spec.kind}) expects class indices of shape ({n},), "
                         f"got {y.dtype} {y.shape}")
    bad = np.flatnonzero((y != np.round(y)) | (y < 0) | (y >= spec.classes))
    if len(bad):
        raise ValueError(f"{where}: task {spec.name}, item {bad[0]}: label {y[bad[0]].item()!r} is not a class index "
                         f"in 0..{spec.classes - 1}")
    return torch.from_numpy(y.astype(np.int64))
