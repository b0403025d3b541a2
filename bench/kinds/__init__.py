"""Task kinds as plug-ins: what a task is, and everything that depends on its kind.

A task is a `TaskSpec`; its kind is the TaskSpec subclass registered under a name in `KINDS`
(`multiclass`, `binary`, `regression`, ...; one module each in this package). A kind owns:
- the layout of its targets (first dimension: items) and a placeholder for unlabelled items;
- the head it builds on a backbone's features (`head`), and its output channels;
- the training loss, on the labelled items of a batch only (partial labels: `labelled` mask);
- what a prediction is (`to_prediction`: what is stored, averaged by ensembles, scored);
- its metrics, the primary one and each metric's direction;
- distillation towards a teacher's outputs (Learning without Forgetting);
- how a horizontal flip and a random crop move its targets;
- what a cell stores for the report (`stored_arrays`), and which report panels apply (`panels`).
Nothing else in the harness branches on the kind: an operation a kind does not implement raises
NotImplementedError naming the kind, never falls through to another kind's behaviour.

Torch is imported inside the methods that need it, not here: the report reads task specs and
scores stored predictions without paying for torch's import (about 2 s).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from bench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

KINDS = Registry("task kind")

# Display of a metric in tables: values are multiplied by `scale` and shown with `digits` decimals.
PERCENT = (100.0, 2)
RAW = (1.0, 4)
GALLERY_SIZE = 16  # highest-loss test images stored per task and cell (uint8), for the report's gallery
# What `stored_arrays` gets to take test images with: indices (k,) -> images (k, C, H, W) uint8.
TakeImages = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Drawing:
    """What a report figure draws over one image (dense kinds' examples): a class map and / or boxes."""

    mask: np.ndarray | None = None  # (H, W) class indices; 0 (background) is left unpainted
    boxes: np.ndarray | None = None  # (K, 5) [x1, y1, x2, y2, class] or (K, 6) with a score before the class


@dataclass(frozen=True)
class FeatureInfo:
    """What a head may know of the features it reads (see bench.models.Backbone)."""

    channels: int  # channels of the backbone's last feature map
    stride: int  # input pixels per feature-map pixel
    vector_dim: int | None  # width of the backbone's trunk output (B, vector_dim); None: no trunk
    image_size: int  # input height = width, pixels


def register(name: str):
    """Class decorator: register a TaskSpec subclass as kind `name` (sets its `kind`)."""

    def add(cls: type[TaskSpec]) -> type[TaskSpec]:
        cls.kind = name
        return KINDS.register(name)(cls)

    return add


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What a task is: its name, kind (the subclass), classes or output dimension, class names.

    Build one with its kind's class (`Multiclass(name="digit", classes=10)`) or `make_spec`.
    """

    name: str
    classes: int = 0  # classification and dense kinds: number of classes
    dim: int = 1  # regression: number of outputs
    class_names: tuple[str, ...] = ()

    kind: ClassVar[str] = ""
    primary: ClassVar[str] = ""  # the metric of best-epoch selection by score, delta_m and forgetting
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})  # metrics where lower is better
    columns: ClassVar[tuple[tuple[str, str], ...]] = ()  # (metric, label) in the report's summary table
    display: ClassVar[tuple[float, int]] = RAW  # (scale, digits) of this kind's metrics in tables
    panels: ClassVar[frozenset[str]] = frozenset()  # report panels that apply (see bench/report)
    # the arrays `stored_arrays` always writes (a cell's predictions.npz lacking one is incomplete)
    required_arrays: ClassVar[tuple[str, ...]] = ("pred", "target")
    # dense kinds: the stored per-class score (`<array>__<task>` in predictions.npz) and its label
    per_class: ClassVar[tuple[str, str]] = ("", "")

    # ---- identity -------------------------------------------------------------------------
    @property
    def higher_is_better(self) -> bool:
        """Direction of the primary metric."""
        return self.better_high(self.primary)

    def better_high(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    @property
    def unit(self) -> str:
        """The primary metric as figures label it, e.g. 'accuracy %' or 'MAE (lower is better)'."""
        label = self.primary.upper() if self.display == RAW else f"{self.primary} %"
        return label if self.higher_is_better else f"{label} (lower is better)"

    def label(self, i: int) -> str:
        return self.class_names[i] if i < len(self.class_names) else str(i)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form stored in a cell's record; `from_dict` rebuilds the spec."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TaskSpec:
        d = dict(d)
        cls = KINDS.get(d.pop("kind"))
        return cls(**{**d, "class_names": tuple(d.get("class_names", ()))})

    # ---- training side (torch tensors) -----------------------------------------------------
    @property
    def out_channels(self) -> int:
        """Channels of the head's output layer."""
        raise self._missing("out_channels")

    def head(self, features: FeatureInfo, **cfg: Any) -> nn.Module:
        """This task's head on a backbone's features; its `reads` attribute says which it takes:
        "vector" (the trunk's (B, vector_dim) output) or "map" (the (B, C, h, w) feature map)."""
        raise self._missing("head")

    def loss(self, out: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0,
             labelled: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the labelled items (all of them when `labelled` (B,) bool is None)."""
        raise self._missing("loss")

    def to_prediction(self, out: torch.Tensor) -> torch.Tensor:
        """Raw model output -> what is stored, averaged by ensembles and scored."""
        raise self._missing("to_prediction")

    def distill(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
        """Mean loss pulling `student` outputs towards a frozen `teacher`'s (same shapes)."""
        raise self._missing("distill")

    def unflip_output(self, out: torch.Tensor) -> torch.Tensor:
        """The output on a mirrored image, brought back to the original's frame (flip TTA)."""
        raise self._missing("unflip_output")

    def flip_target(self, target: torch.Tensor, flipped: torch.Tensor, width: int) -> torch.Tensor:
        """Targets after mirroring the images where `flipped` (B,) bool is set. Labels that depend on
        orientation are the dataset's business (its label maps, bench/augment); geometry is the kind's."""
        return target

    def crop_target(self, target: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
        """Targets after the trainer's random crop: each image zero-padded by `pad`, then cut back
        to its size at offsets dy, dx (B,) in [0, 2 * pad]."""
        return target

    def placeholder(self, like: torch.Tensor, n: int) -> torch.Tensor:
        """Targets for n items without this task's label (partial labels): never used by a loss."""
        import torch

        return torch.zeros((n, *like.shape[1:]), dtype=like.dtype)

    def stratify_labels(self, target: torch.Tensor) -> torch.Tensor | None:
        """(N,) labels that splits may stratify by, or None."""
        return None

    def check_targets(self, target: torch.Tensor, *, image_size: int, where: str) -> None:
        """ValueError naming `where`, the item index and the value, for a target out of range."""

    # ---- report side (numpy arrays of stored predictions) -----------------------------------
    def metrics(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Metrics from stored predictions and targets (the primary one among them)."""
        raise self._missing("metrics")

    def item_losses(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(N,) loss of each item from stored predictions (the report's highest-loss gallery)."""
        raise self._missing("item_losses")

    def combine(self, preds: list[np.ndarray]) -> np.ndarray:
        """Several models' stored predictions of the same items -> the ensemble's. A kind without it
        cannot be ensembled (the grid refuses such an ensemble before training)."""
        raise self._missing("combine")

    def stored_arrays(self, pred: np.ndarray, target: np.ndarray, images: TakeImages) -> dict[str, np.ndarray]:
        """What a trained cell stores of this task's test predictions `pred` (from `to_prediction`) and
        targets, for the report and for ensembles; the store names each `<key>__<task>`.

        This default, for kinds with one prediction per item: the predictions as float16 (`pred`), the
        targets (`target`), and the gallery of the GALLERY_SIZE highest-loss test images (`gallery_index`,
        `gallery_loss`, `gallery_x`; a few KB, kept in every cell, since which seeds finish is not known here).
        """
        return {"pred": pred.astype(np.float16), "target": target, **gallery(self.item_losses(pred, target), images)}

    def example_drawings(self, arrays: dict[str, np.ndarray], task: str) -> tuple[np.ndarray, list[Drawing], list[Drawing]]:
        """From a cell's stored arrays: its example test images (k, C, H, W) uint8, and what to draw over
        each, the truth and the prediction (dense kinds' "dense_examples" panel)."""
        raise self._missing("example_drawings")

    def describe(self, value: np.ndarray, predicted: bool = False) -> str:
        """A short caption of one target (or prediction) for image galleries."""
        raise self._missing("describe")

    def _missing(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"task {self.name}: kind {self.kind!r} does not implement {what}")


def make_spec(kind: str, **fields: Any) -> TaskSpec:
    """A TaskSpec of the named kind; unknown kinds list the valid ones."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS.names())}")
    return KINDS.get(kind)(**fields)


def gallery(losses: np.ndarray, images: TakeImages) -> dict[str, np.ndarray]:
    """The GALLERY_SIZE highest-loss items (ties: lowest index first): indices, losses and images (k, C, H, W)."""
    idx = np.argsort(-losses, kind="stable")[:GALLERY_SIZE]
    return {"gallery_index": idx, "gallery_loss": losses[idx].astype(np.float32), "gallery_x": images(idx)}


def nan_for_none(values: list[float | None]) -> np.ndarray:
    """Per-class scores with None (class absent) as NaN, float32, for storage in predictions.npz."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)


def masked_mean(values: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Mean of per-item values (B,) over the labelled items (B,) bool; 0 when none is labelled."""
    m = labelled.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1)


# Importing the kind modules registers them.
from bench.kinds import classification, detection, regression, segmentation  # noqa: E402,F401
