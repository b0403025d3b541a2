"""Suite files: parse YAML once, validate strictly, return frozen typed config objects.

Nothing past `load_suite` sees a raw dict. Every error is a `SuiteError` that names the file, the
key path and the valid choices, and it is raised before any training starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.registry import Registry, check_params


class SuiteError(ValueError):
    """A suite file is malformed; the message says where and how to fix it."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one cell trains. Suite-wide, overridable per dataset and per strategy (`train:`)."""

    epochs: int = 20
    batch_size: int = 512
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adam | adamw
    lr: float = 0.05  # peak learning rate, reached after warmup
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle (linear warmup, linear decay to 0) | cosine | constant
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    loss_weights: dict[str, float] = field(default_factory=dict)  # task -> weight; missing = 1.0
    crop_pad: int = 4  # random-crop padding in pixels; 0 disables the crop
    flip: bool = True  # random horizontal flip (datasets may make it label-aware)
    tta_flip: bool = False  # average outputs over the image and its mirror at evaluation (not for label-aware flips)
    cuda_graph: bool = True  # on CUDA, replay the training step as a CUDA graph (Adam/AdamW; else eager)
    select: str = "loss"  # best epoch by: loss (weighted val loss) | score (mean primary metric)
    eval_batch_size: int = 2048


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
SELECTS = ("loss", "score")


@dataclass(frozen=True, kw_only=True)
class PluginConfig:
    """A registry name plus its parameters (backbone or dataset options)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    name: str
    tasks: tuple[str, ...]
    val_size: float = 0.1  # fraction of the train pool if < 1, else a number of images
    subset: int | None = None  # stratified sample of the train pool (smoke runs)
    test_subset: int | None = None  # stratified sample of the test set (smoke runs)
    download: bool = False  # allow torchvision's download when no local copy is found
    options: dict[str, Any] = field(default_factory=dict)  # the dataset's own parameters
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    # A union entry: the registered datasets whose tasks it joins (each image labelled for its own
    # part's tasks only); then `name` is the entry's id and `tasks` all the parts' tasks, in order.
    parts: tuple["DatasetConfig", ...] = ()


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    id: str  # label in cell names and reports; defaults to the strategy name
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None  # train on a subset of the dataset's tasks
    backbone: PluginConfig | None = None  # overrides the suite's backbone
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Where runs are also logged (bench/tracking/); None = off. Not part of any cell's key."""

    mlflow: str | None = None  # tracking URI (http://, sqlite:///, file:) or a folder (a sqlite store in it)
    tensorboard: str | None = None  # folder; event files go to <folder>/<suite>/<cell>/


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # entry id -> the single-task entries it is compared with (`reference:`); report-only, in no key
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)


SUITE_KEYS = ("name", "description", "datasets", "strategies", "seeds", "backbone", "train", "tracking")


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise SuiteError naming the file and key path on a problem."""
    path = Path(path)
    if not path.exists():
        raise SuiteError(f"{path}: no such suite file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from None
    try:
        return _parse_suite(raw, path)
    except ValueError as err:
        raise SuiteError(f"{path}: {err}") from None


def resolve_suite_path(name_or_path: str, suites_dir: Path = Path("suites")) -> Path:
    """`cifar_mtl` -> suites/cifar_mtl.yaml; an existing path is returned as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return suites_dir / f"{name_or_path}.yaml"


def _parse_suite(raw: Any, path: Path) -> Suite:
    # Late imports: the registries pull in torch, which `bench --help` need not pay for.
    from bench.data import DATASETS
    from bench.models import BACKBONES
    from bench.strategies import STRATEGIES

    raw = _mapping(raw, "(top level)")
    _refuse_unknown(raw, SUITE_KEYS, "")
    for key in ("datasets", "strategies", "seeds"):
        if key not in raw:
            raise ValueError(f"{key}: required key is missing")
    train = _train_config(raw.get("train", {}), "train")
    backbone = _plugin(raw.get("backbone", "alexnet_cifar"), "backbone", BACKBONES)
    datasets = _datasets(raw["datasets"], DATASETS)
    strategies, references = _strategies(raw["strategies"], STRATEGIES, BACKBONES)
    _check_members(strategies, STRATEGIES)
    seeds = _seeds(raw["seeds"])
    for st in strategies:
        for ds in datasets:
            unknown = set(st.tasks or ()) - set(ds.tasks)
            if unknown:
                raise ValueError(
                    f"strategies.{st.id}.tasks: {sorted(unknown)} not among dataset "
                    f"{ds.name}'s tasks {list(ds.tasks)}"
                )
    return Suite(
        name=str(raw.get("name", path.stem)),
        path=str(path),
        description=str(raw.get("description", "")),
        datasets=datasets,
        strategies=strategies,
        seeds=seeds,
        backbone=backbone,
        train=train,
        tracking=_tracking(raw.get("tracking")),
        references=_references(references, strategies, datasets, STRATEGIES),
    )


def _tracking(raw: Any) -> TrackingConfig:
    cfg = _dataclass_from(TrackingConfig, {} if raw is None else raw, "tracking")
    for key in ("mlflow", "tensorboard"):
        if getattr(cfg, key) is not None and not getattr(cfg, key).strip():
            raise ValueError(f"tracking.{key}: empty; give a URI or folder, or leave the key out")
    return cfg


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _refuse_unknown(raw: dict, valid: tuple[str, ...] | list[str], where: str) -> None:
    for key in raw:
        if key not in valid:
            prefix = f"{where}." if where else ""
            raise ValueError(f"{prefix}{key}: unknown key; valid: {', '.join(valid)}")


def _dataclass_from(cls: type, raw: Any, where: str, **fixed: Any) -> Any:
    raw = _mapping(raw, where)
    check_params(cls, raw, where)
    return cls(**fixed, **raw)


def _train_config(raw: Any, where: str) -> TrainConfig:
    cfg = _dataclass_from(TrainConfig, raw, where)
    check_train_values(cfg, where)
    return cfg


def check_train_values(cfg: TrainConfig, where: str) -> None:
    """Checks on values (not just types) of a TrainConfig; also run on merged overrides."""
    for key, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(cfg, key) not in valid:
            raise ValueError(f"{where}.{key}: {getattr(cfg, key)!r} unknown; valid: {', '.join(valid)}")
    if cfg.select not in SELECTS:
        raise ValueError(f"{where}.select: {cfg.select!r} unknown; valid: {', '.join(SELECTS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"{where}: epochs and batch_size must be >= 1")


def merge_train(base: TrainConfig, *overrides: dict[str, Any]) -> TrainConfig:
    merged = base
    for o in overrides:
        merged = dataclasses.replace(merged, **o)
    return merged


def _plugin(raw: Any, where: str, registry: Registry) -> PluginConfig:
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = dict(_mapping(raw, where))
    name = raw.pop("name", None)
    if name not in registry:
        raise ValueError(f"{where}.name: unknown {registry.kind} {name!r}; valid: {', '.join(registry.names())}")
    check_params(registry.get(name), raw, where)
    return PluginConfig(name=name, params=raw)


def _datasets(raw: Any, registry: Registry) -> tuple[DatasetConfig, ...]:
    raw = _mapping(raw, "datasets")
    if not raw:
        raise ValueError(f"datasets: empty; the grid needs at least one of: {', '.join(registry.names())}")
    out = []
    for name, body in raw.items():
        where = f"datasets.{name}"
        body = dict(_mapping(body or {}, where))
        if "union" in body:
            out.append(_union(str(name), body, registry, where))
            continue
        if name not in registry:
            raise ValueError(f"{where}: unknown dataset {name!r}; valid: {', '.join(registry.names())} "
                             "(or give the entry a `union:` list of parts)")
        cfg = _dataset(name, body, registry, where)
        _check_overrides(cfg.train, f"{where}.train")
        out.append(cfg)
    return tuple(out)


def _dataset(name: str, body: dict, registry: Registry, where: str) -> DatasetConfig:
    loader = registry.get(name)
    tasks = body.pop("tasks", list(loader.tasks))
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{where}.tasks: expected a non-empty list; valid: {', '.join(loader.tasks)}")
    for t in tasks:
        if t not in loader.tasks:
            raise ValueError(f"{where}.tasks: unknown task {t!r}; valid: {', '.join(loader.tasks)}")
    _refuse_unknown(body, [f.name for f in dataclasses.fields(DatasetConfig) if f.name not in ("name", "tasks", "parts")],
                    where)
    cfg = _dataclass_from(DatasetConfig, body, where, name=name, tasks=tuple(tasks))
    check_params(loader, cfg.options, f"{where}.options")
    return cfg


UNION_KEYS = ("union", "train")
PART_KEYS = ("name", "tasks", "val_size", "subset", "test_subset", "download", "options")


def _union(name: str, body: dict, registry: Registry, where: str) -> DatasetConfig:
    """`{union: [{name: <dataset>, tasks: [...], ...}, ...], train: {...}}`: one entry over several datasets."""
    _refuse_unknown(body, UNION_KEYS, where)
    raw_parts = body["union"]
    if not isinstance(raw_parts, list) or not raw_parts:
        raise ValueError(f"{where}.union: expected a non-empty list of parts, each {{name: <dataset>, tasks: [...]}}")
    parts, owner = [], {}
    for i, part in enumerate(raw_parts):
        pwhere = f"{where}.union[{i}]"
        part = dict(_mapping(part, pwhere))
        _refuse_unknown(part, PART_KEYS, pwhere)
        pname = part.pop("name", None)
        if pname not in registry:
            raise ValueError(f"{pwhere}.name: unknown dataset {pname!r}; valid: {', '.join(registry.names())}")
        cfg = _dataset(pname, part, registry, pwhere)
        for t in cfg.tasks:
            if t in owner:
                raise ValueError(f"{pwhere}.tasks: task {t!r} also comes from part {owner[t]}; "
                                 "each task of a union comes from one part")
            owner[t] = i
        parts.append(cfg)
    train = body.get("train", {})
    _check_overrides(train, f"{where}.train")
    return DatasetConfig(name=name, tasks=tuple(owner), parts=tuple(parts), train=train)


STRATEGY_KEYS = ("name", "id", "tasks", "backbone", "train", "reference")


def _strategies(raw: Any, registry: Registry, backbones: Registry) -> tuple[tuple[StrategyConfig, ...], dict[int, Any]]:
    """The entries, and each entry's raw `reference:` by position (checked by `_references`)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("strategies: expected a non-empty list; valid names: " + ", ".join(registry.names()))
    out, seen, references = [], set(), {}
    for i, entry in enumerate(raw):
        entry = {"name": entry} if isinstance(entry, str) else dict(_mapping(entry, f"strategies[{i}]"))
        name = entry.pop("name", None)
        where = f"strategies[{i}]"
        if name not in registry:
            raise ValueError(f"{where}.name: unknown strategy {name!r}; valid: {', '.join(registry.names())}")
        sid = str(entry.pop("id", name))
        if sid in seen:
            raise ValueError(f"{where}.id: {sid!r} is used twice; give each entry its own id")
        seen.add(sid)
        tasks = entry.pop("tasks", None)
        if tasks is not None and (not isinstance(tasks, list) or not tasks):
            raise ValueError(f"{where}.tasks: expected a non-empty list of task names")
        backbone = entry.pop("backbone", None)
        if backbone is not None:
            backbone = _plugin(backbone, f"{where}.backbone", backbones)
        train = entry.pop("train", {})
        _check_overrides(train, f"{where}.train")
        if "reference" in entry:
            references[i] = entry.pop("reference")
        check_params(registry.get(name), entry, where)
        try:  # the strategy's own value checks; its messages start with the parameter's name
            registry.get(name)(**entry)
        except ValueError as err:
            raise ValueError(f"{where}.{err}") from None
        out.append(StrategyConfig(
            id=sid, name=name, params=entry, backbone=backbone, train=train,
            tasks=tuple(tasks) if tasks else None,
        ))
    return tuple(out), references


def _references(raw: dict[int, Any], strategies: tuple[StrategyConfig, ...], datasets: tuple[DatasetConfig, ...],
                registry: Registry) -> dict[str, tuple[str, ...]]:
    """`reference: <id>` or `[<id>, ...]` on a multi-task entry: the single-task entries (one model
    per task: `stl`, or a training entry whose `tasks` are one task) the report compares it with."""
    def single(st: StrategyConfig) -> bool:
        strategy = registry.get(st.name)(**st.params)
        one_task = all(len(st.tasks or ds.tasks) == 1 for ds in datasets)
        return strategy.members() is None and (not strategy.multi_task or one_task)

    valid = [st.id for st in strategies if single(st)]
    out = {}
    for i, value in raw.items():
        where, st = f"strategies[{i}].reference", strategies[i]
        ids = [value] if isinstance(value, str) else value
        if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
            raise ValueError(f"{where}: expected an entry id or a non-empty list of them (quote an id YAML reads "
                             f"as a boolean or a number); valid: {', '.join(valid) or '(none)'}")
        if single(st):
            raise ValueError(f"{where}: {st.id!r} is itself single-task; only multi-task entries take a reference")
        for sid in ids:
            if sid not in valid:
                raise ValueError(f"{where}: {sid!r} is not a single-task training entry of this suite; "
                                 f"valid: {', '.join(valid) or '(none)'}")
        out[st.id] = tuple(ids)
    return out


def _check_members(strategies: tuple[StrategyConfig, ...], registry: Registry) -> None:
    """A combining entry (ensemble) must name a training entry of this suite and distinct seeds."""
    members = {st.id: registry.get(st.name)(**st.params).members() for st in strategies}
    trained = [sid for sid, m in members.items() if m is None]
    for i, st in enumerate(strategies):
        m, where = members[st.id], f"strategies[{i}]"
        if m is None:
            continue
        if m.of not in trained:
            raise ValueError(f"{where}.of: {m.of!r} is not a training strategy id of this suite; "
                             f"valid: {', '.join(trained) or '(none)'}")
        if not m.seeds or len(set(m.seeds)) != len(m.seeds):
            raise ValueError(f"{where}.seeds: expected distinct seeds, got {list(m.seeds)}")
        for key in ("tasks", "backbone", "train"):
            if getattr(st, key):
                raise ValueError(f"{where}.{key}: {st.name} trains nothing; set {key} on entry {m.of!r}")


def _check_overrides(raw: Any, where: str) -> None:
    raw = _mapping(raw, where)
    check_params(TrainConfig, raw, where)
    check_train_values(merge_train(TrainConfig(), raw), where)


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise ValueError(f"seeds: expected a non-empty list of integers, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise ValueError(f"seeds: repeated seed in {raw}")
    return tuple(raw)
