"""The typed settings of a suite: frozen dataclasses that `bench.config.load_suite` builds from a
suite file, with each numeric field's valid range (`Range`) declared beside it.

A module of its own, below the loader, so that the trainer and the plug-ins that read these settings
do not import the loader (which imports the plug-in registries, and so the trainer, back).
`bench.config` re-exports every name here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

from bench.registry import Range


class SuiteError(ValueError):
    """A suite file is malformed; the message says where and how to fix it."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one cell trains. Suite-wide, overridable per dataset and per strategy (`train:`).

    Every numeric field states its valid values (`Range`), checked when the suite loads."""

    epochs: Annotated[int, Range(">= 1")] = 20
    batch_size: Annotated[int, Range(">= 1")] = 512
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adam | adamw
    lr: Annotated[float, Range("> 0")] = 0.05  # peak learning rate, reached after warmup
    momentum: Annotated[float, Range("[0, 1)")] = 0.9
    weight_decay: Annotated[float, Range(">= 0")] = 5e-4
    # onecycle (linear warmup, linear decay to 0) | cosine (after any warmup) | constant | plateau
    # (ReduceLROnPlateau on the selection metric after any warmup); see bench/schedules.py
    schedule: str = "onecycle"
    warmup_epochs: Annotated[float, Range(">= 0")] = 1.0
    # ReduceLROnPlateau's factor, patience, min_lr, ...; each key's range is checked by bench/schedules.py
    plateau: dict[str, float | str] = field(default_factory=dict)
    early_stopping: dict[str, float] = field(default_factory=dict)  # {} = off; {patience: epochs, min_delta: 0.0}
    label_smoothing: Annotated[float, Range("[0, 1)")] = 0.0
    # task -> weight; missing = 1.0
    loss_weights: Annotated[dict[str, float], Range(">= 0")] = field(default_factory=dict)
    crop_pad: Annotated[int, Range(">= 0")] = 4  # random-crop padding in pixels; 0 disables the crop
    flip: bool = True  # random horizontal flip (datasets may make it label-aware)
    # augmentation ops after the crop_pad / flip shorthands, e.g. [{op: rotate, degrees: 5, p: 1.0}]
    # (bench/augment); non-empty: the whole pipeline, shorthands included, runs through kornia
    augment: list[dict[str, Any]] = field(default_factory=list)
    tta_flip: bool = False  # average outputs over the image and its mirror at evaluation (not for label-aware flips)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (CUDA; CPU runs fp32)
    deterministic: bool = False  # cuDNN deterministic, no autotuning, torch's deterministic algorithms
    cuda_graph: bool = True  # on CUDA, replay the training step as a CUDA graph (Adam/AdamW, bf16; else eager)
    select: str = "loss"  # best epoch by: loss (weighted val loss) | score (mean primary metric)
    eval_batch_size: Annotated[int, Range(">= 1")] = 2048
    # steps between measurements of the cosines between task gradients on the shared parameters
    # (history columns for the report; one forward and T backward passes each, not timed as training); 0 = off
    grad_cosine_every: Annotated[int, Range(">= 0")] = 0


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant", "plateau")
SELECTS = ("loss", "score")


@dataclass(frozen=True, kw_only=True)
class PluginConfig:
    """A registry name plus its parameters (backbone or dataset options)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    name: str  # the entry's id (cell names, reports); the registered dataset unless `dataset` names it
    tasks: tuple[str, ...]
    dataset: str | None = None  # the registered dataset, where the entry's id differs (two npz entries)
    # a fraction of the train pool if < 1, else a whole number of images (checked against the pool
    # before any training: bench/data.check_sizes)
    val_size: Annotated[float, Range("> 0")] = 0.1
    subset: Annotated[int | None, Range(">= 1")] = None  # stratified sample of the train pool (smoke runs)
    test_subset: Annotated[int | None, Range(">= 1")] = None  # stratified sample of the test set (smoke runs)
    download: bool = False  # allow torchvision's download when no local copy is found
    options: dict[str, Any] = field(default_factory=dict)  # the dataset's own parameters
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    # A union entry: the registered datasets whose tasks it joins (each image labelled for its own
    # part's tasks only); then `name` is the entry's id and `tasks` all the parts' tasks, in order.
    parts: tuple["DatasetConfig", ...] = ()

    @property
    def registered(self) -> str:
        """The registered dataset this entry (or union part) loads."""
        return self.dataset or self.name


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    id: str  # label in cell names and reports; defaults to the strategy name
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None  # train on a subset of the dataset's tasks
    backbone: PluginConfig | None = None  # overrides the suite's backbone
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    # how the per-task losses become one update (bench/weighting); `equal`: sum of loss_weights x losses
    weighting: PluginConfig = field(default_factory=lambda: PluginConfig(name="equal"))


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Where runs are also logged (bench/tracking/); None = off. Not part of any cell's key."""

    mlflow: str | None = None  # tracking URI (http://, sqlite:///, file:) or a folder (a sqlite store in it)
    tensorboard: str | None = None  # folder; event files go to <folder>/<suite>/<cell>/


@dataclass(frozen=True, kw_only=True)
class SlurmConfig:
    """How `--executor slurm` submits the suite's cells (bench/executors/slurm.py), one array task per
    cell. Command-line flags win over these; not part of any cell's key."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 120  # wall-clock limit of each cell's job, minutes (sbatch --time)
    gpus_per_task: int = 0  # GPUs per cell (sbatch --gpus-per-node; one task per job)
    cpus_per_task: int = 2  # also the job's torch threads
    mem_gb: float = 8.0  # host memory per cell, GB (sbatch --mem)
    array_parallelism: int = 256  # array tasks running at once (sbatch --array=0-N%P); submitit's default
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {account: x, qos: y}


SLURM_MINIMUM = {"time_min": 1, "gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": 0, "array_parallelism": 1}


@dataclass(frozen=True, kw_only=True)
class Reference:
    """What a protocol suite is compared with in its report (display only, never computed with)."""

    source: str = ""  # where the published numbers come from: the study, its table, its number of runs
    # strategy id -> task -> the study's primary metric as the report shows it (accuracy in %, MAE as is)
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    tuned: str | None = None  # a suite whose stored results (same strategy ids) the report shows beside


@dataclass(frozen=True, kw_only=True)
class Suite:
    name: str
    path: str
    description: str
    datasets: tuple[DatasetConfig, ...]
    strategies: tuple[StrategyConfig, ...]
    seeds: tuple[int, ...]
    backbone: PluginConfig
    train: TrainConfig
    train_keys: tuple[str, ...] = ()  # the train settings the suite's own `train:` sets (the rest: defaults)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # entry id -> the single-task entries it is compared with (its `reference:`); report-only, in no key.
    # Not `reference` below: that one is a protocol suite's published numbers (report/protocol.py).
    baselines: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reference: Reference = field(default_factory=Reference)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


SUITE_KEYS = ("name", "description", "datasets", "strategies", "seeds", "backbone", "train", "tracking", "reference",
              "slurm")


def merge_train(base: TrainConfig, *overrides: dict[str, Any]) -> TrainConfig:
    """`base` with each override mapping applied in turn (later ones win); values are checked by the
    loader (`bench.config.check_train_values`), not here."""
    merged = base
    for o in overrides:
        merged = dataclasses.replace(merged, **o)
    return merged
