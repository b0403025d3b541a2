"""Suite files: parse YAML once, validate strictly, return frozen typed config objects.

Nothing past `load_suite` sees a raw dict. Every error is a `SuiteError` that names the file, the
key path and the valid choices, and it is raised before any training starts. The objects it returns
are defined in `bench.settings` (re-exported here).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import yaml

from bench.registry import SEEDS, YAML_BOOL_HINT, Registry, check_params, check_value, declared_params
from bench.suite_yaml import DuplicateKey, file_name, mapping, read_yaml, refuse_repeated, refuse_unknown, text
from bench.settings import (OPTIMIZERS, SCHEDULES, SELECTS, SLURM_MINIMUM, SUITE_KEYS, DatasetConfig,  # noqa: F401
                            PluginConfig, Reference, SlurmConfig, StrategyConfig, Suite, SuiteError, TrackingConfig,
                            TrainConfig, merge_train)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise SuiteError naming the file and key path on a problem."""
    path = Path(path)
    if not path.exists():
        raise SuiteError(f"{path}: no such suite file")
    if path.is_dir():
        raise SuiteError(f"{path}: is a folder; give a suite file (a .yaml path) or a suite name from suites/")
    try:
        raw = read_yaml(path)
    except DuplicateKey as err:
        raise SuiteError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"{path}: cannot read the suite file: {err}") from None
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
    # Late imports: the registries import every plug-in module (no torch, but numpy and a few
    # hundred ms), which `bench --help` need not pay for.
    from bench.data import DATASETS
    from bench.models import BACKBONES
    from bench.strategies import STRATEGIES

    raw = mapping(raw, "(top level)")
    refuse_unknown(raw, SUITE_KEYS, "")
    for key in ("datasets", "strategies", "seeds"):
        if key not in raw:
            raise ValueError(f"{key}: required key is missing")
    train = _train_config(raw.get("train", {}), "train")
    backbone = _plugin(raw.get("backbone", "alexnet_cifar"), "backbone", BACKBONES)
    datasets = _datasets(raw["datasets"], DATASETS)
    strategies, baselines = _strategies(raw["strategies"], STRATEGIES, BACKBONES)
    _check_members(strategies, STRATEGIES)
    seeds = _seeds(raw["seeds"])
    for i, st in enumerate(strategies):
        for ds in datasets:
            unknown = set(st.tasks or ()) - set(ds.tasks)
            if unknown:
                raise ValueError(
                    f"strategies.{st.id}.tasks: {sorted(unknown)} not among dataset "
                    f"{ds.name}'s tasks {list(ds.tasks)}"
                )
            _check_weighting_values(st.weighting, len(st.tasks or ds.tasks), f"strategies[{i}].weighting")
    return Suite(
        name=file_name(raw.get("name", path.stem), "name" if "name" in raw else "name (from the file's name: rename the file or set name:)"),
        path=str(path),
        description=text(raw.get("description", ""), "description"),
        datasets=datasets,
        strategies=strategies,
        seeds=seeds,
        backbone=backbone,
        train=train,
        train_keys=tuple(mapping(raw.get("train", {}), "train")),
        tracking=_tracking(raw.get("tracking")),
        baselines=_baselines(baselines, strategies, datasets, STRATEGIES),
        reference=_reference(raw.get("reference"), strategies, datasets),
        slurm=slurm_config(raw.get("slurm") or {}, "slurm"),
    )


def _reference(raw: Any, strategies: tuple[StrategyConfig, ...], datasets: tuple[DatasetConfig, ...]) -> Reference:
    ref = _dataclass_from(Reference, {} if raw is None else raw, "reference")
    ids, tasks = [st.id for st in strategies], sorted({t for ds in datasets for t in ds.tasks})
    for sid, values in ref.published.items():
        if sid not in ids:
            raise ValueError(f"reference.published.{sid}: not a strategy id of this suite; valid: {', '.join(ids)}")
        for t in values:
            if t not in tasks:
                raise ValueError(f"reference.published.{sid}.{t}: not a task of this suite; valid: {', '.join(tasks)}")
    if ref.tuned is not None and not ref.tuned.strip():
        raise ValueError("reference.tuned: empty; name a suite, or leave the key out")
    return ref


def _tracking(raw: Any) -> TrackingConfig:
    cfg = _dataclass_from(TrackingConfig, {} if raw is None else raw, "tracking")
    for key in ("mlflow", "tensorboard"):
        if getattr(cfg, key) is not None and not getattr(cfg, key).strip():
            raise ValueError(f"tracking.{key}: empty; give a URI or folder, or leave the key out")
    return cfg


def slurm_config(raw: Any, where: str = "slurm", *, flags: bool = False) -> SlurmConfig:
    """A `slurm:` block with its values checked. flags=True: the values came from command-line flags
    (`--cpus-per-task` ...), which the errors then name instead of the key path."""
    cfg = _dataclass_from(SlurmConfig, raw, where)
    for key, least in SLURM_MINIMUM.items():
        value = getattr(cfg, key)
        if value < least or (key == "mem_gb" and value <= 0):
            name = f"--{key.replace('_', '-')}" if flags else f"{where}.{key}"
            raise ValueError(f"{name}: {value!r} is too small; expected {'> 0' if key == 'mem_gb' else f'>= {least}'}")
    if cfg.partition is not None and not cfg.partition.strip():
        raise ValueError(f"{'--partition' if flags else where + '.partition'}: empty; name a partition or leave it "
                         "out for the cluster's default")
    return cfg


def _dataclass_from(cls: type, raw: Any, where: str, **fixed: Any) -> Any:
    raw = mapping(raw, where)
    check_params(cls, raw, where)
    return cls(**fixed, **raw)


def _train_config(raw: Any, where: str) -> TrainConfig:
    cfg = _dataclass_from(TrainConfig, raw, where)
    check_train_values(cfg, where)
    return cfg


def check_train_values(cfg: TrainConfig, where: str) -> None:
    """Checks on values a type cannot state: the string choices, and the settings checked by their
    own modules (plateau, early stopping, augmentation ops); numbers are checked by their Range.
    Also run on merged overrides."""
    from bench.augment import build_op
    from bench.precision import PRECISIONS
    from bench.schedules import check_early_stopping, check_plateau

    for key, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("select", SELECTS),
                       ("precision", PRECISIONS)):
        if getattr(cfg, key) not in valid:
            raise ValueError(f"{where}.{key}: {getattr(cfg, key)!r} unknown; valid: {', '.join(valid)}")
    for key, check in (("plateau", check_plateau), ("early_stopping", check_early_stopping)):
        try:
            check(getattr(cfg, key))
        except ValueError as err:
            raise ValueError(f"{where}.{key}.{err}") from None
    for i, op in enumerate(cfg.augment):
        build_op(mapping(op, f"{where}.augment[{i}]"), f"{where}.augment[{i}]")


def _plugin(raw: Any, where: str, registry: Registry) -> PluginConfig:
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = dict(mapping(raw, where))
    name = raw.pop("name", None)
    if name not in registry:
        raise ValueError(f"{where}.name: unknown {registry.kind} {name!r}; valid: {', '.join(registry.names())}")
    check_params(registry.get(name), raw, where)
    return PluginConfig(name=name, params=raw)


def _datasets(raw: Any, registry: Registry) -> tuple[DatasetConfig, ...]:
    raw = mapping(raw, "datasets")
    if not raw:
        raise ValueError(f"datasets: empty; the grid needs at least one of: {', '.join(registry.names())}")
    out = []
    for name, body in raw.items():
        where = f"datasets.{name}"
        file_name(str(name), where)
        body = dict(mapping(body or {}, where))
        if "union" in body:
            out.append(_union(str(name), body, registry, where))
            continue
        source = body.pop("dataset", name)
        if source not in registry:
            at = f"{where}.dataset" if source != name else where
            raise ValueError(f"{at}: unknown dataset {source!r}; valid: {', '.join(registry.names())} "
                             "(or give the entry `dataset: <registered name>`, or a `union:` list of parts)"
                             + (YAML_BOOL_HINT if isinstance(source, bool) else ""))
        cfg = _dataset(name, body, registry, where, source)
        _check_overrides(cfg.train, f"{where}.train")
        out.append(cfg)
    return tuple(out)


def _dataset(name: str, body: dict, registry: Registry, where: str, source: str | None = None) -> DatasetConfig:
    loader = registry.get(source or name)
    options = mapping(body.get("options", {}), f"{where}.options")
    check_params(loader, options, f"{where}.options")
    try:
        declared = loader.declare(options).tasks
    except ValueError as err:
        raise ValueError(f"{where}.options.{err}") from None
    tasks = body.pop("tasks", list(declared))
    if not isinstance(tasks, list) or not tasks:
        raise ValueError(f"{where}.tasks: expected a non-empty list; valid: {', '.join(declared)}")
    for t in tasks:
        if t not in declared:
            raise ValueError(f"{where}.tasks: unknown task {t!r}; valid: {', '.join(declared)}"
                             + (YAML_BOOL_HINT if isinstance(t, bool) else ""))
    refuse_repeated(tasks, f"{where}.tasks")
    refuse_unknown(body, [f.name for f in dataclasses.fields(DatasetConfig)
                           if f.name not in ("name", "tasks", "parts", "dataset")], where)
    cfg = _dataclass_from(DatasetConfig, body, where, name=name, tasks=tuple(tasks),
                          dataset=source if source not in (None, name) else None)
    if cfg.val_size >= 1 and cfg.val_size != int(cfg.val_size):
        raise ValueError(f"{where}.val_size: {cfg.val_size!r} is neither a fraction in (0, 1) nor a whole number "
                         "of images")
    return cfg


UNION_KEYS = ("union", "train")
PART_KEYS = ("name", "tasks", "val_size", "subset", "test_subset", "download", "options")


def _union(name: str, body: dict, registry: Registry, where: str) -> DatasetConfig:
    """`{union: [{name: <dataset>, tasks: [...], ...}, ...], train: {...}}`: one entry over several datasets."""
    refuse_unknown(body, UNION_KEYS, where)
    raw_parts = body["union"]
    if not isinstance(raw_parts, list) or not raw_parts:
        raise ValueError(f"{where}.union: expected a non-empty list of parts, each {{name: <dataset>, tasks: [...]}}")
    parts, owner = [], {}
    for i, part in enumerate(raw_parts):
        pwhere = f"{where}.union[{i}]"
        part = dict(mapping(part, pwhere))
        refuse_unknown(part, PART_KEYS, pwhere)
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


STRATEGY_KEYS = ("name", "id", "tasks", "backbone", "train", "weighting", "reference")


def _strategies(raw: Any, registry: Registry, backbones: Registry) -> tuple[tuple[StrategyConfig, ...], dict[int, Any]]:
    """The entries, and each entry's raw `reference:` by position (checked by `_baselines`)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("strategies: expected a non-empty list; valid names: " + ", ".join(registry.names()))
    out, seen, baselines = [], set(), {}
    for i, entry in enumerate(raw):
        entry = {"name": entry} if isinstance(entry, str) else dict(mapping(entry, f"strategies[{i}]"))
        name = entry.pop("name", None)
        where = f"strategies[{i}]"
        if name not in registry:
            raise ValueError(f"{where}.name: unknown strategy {name!r}; valid: {', '.join(registry.names())}"
                             + (YAML_BOOL_HINT if isinstance(name, bool) else ""))
        sid = file_name(entry.pop("id", name), f"{where}.id")
        if sid in seen:
            raise ValueError(f"{where}.id: {sid!r} is used twice; give each entry its own id")
        seen.add(sid)
        tasks = entry.pop("tasks", None)
        if tasks is not None and (not isinstance(tasks, list) or not tasks):
            raise ValueError(f"{where}.tasks: expected a non-empty list of task names")
        for j, t in enumerate(tasks or ()):
            text(t, f"{where}.tasks[{j}]")
        refuse_repeated(tasks or [], f"{where}.tasks")
        backbone = entry.pop("backbone", None)
        if backbone is not None:
            backbone = _plugin(backbone, f"{where}.backbone", backbones)
        train = entry.pop("train", {})
        _check_overrides(train, f"{where}.train")
        if "reference" in entry:
            baselines[i] = entry.pop("reference")
        weighting = _weighting(entry.pop("weighting", "equal"), f"{where}.weighting", name, registry)
        own = sorted(declared_params(registry.get(name)))
        for key in entry:
            if key not in own:
                raise ValueError(f"{where}.{key}: unknown parameter; valid: the entry's {', '.join(STRATEGY_KEYS)}, "
                                 f"and {name}'s {', '.join(own) or '(none)'}")
        check_params(registry.get(name), entry, where)
        try:  # the strategy's own value checks; its messages start with the parameter's name
            registry.get(name)(**entry)
        except ValueError as err:
            raise ValueError(f"{where}.{err}") from None
        out.append(StrategyConfig(
            id=sid, name=name, params=entry, backbone=backbone, train=train,
            tasks=tuple(tasks) if tasks else None, weighting=weighting,
        ))
    return tuple(out), baselines


def _baselines(raw: dict[int, Any], strategies: tuple[StrategyConfig, ...], datasets: tuple[DatasetConfig, ...],
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


def _weighting(raw: Any, where: str, strategy: str, strategies: Registry) -> PluginConfig:
    """`weighting: pcgrad` or `{name: cagrad, c: 0.4}`: a registered method and its declared parameters.
    The default, `equal`, is taken without importing the methods (torch modules, bench/weighting)."""
    if raw == "equal":
        return PluginConfig(name="equal")
    from bench.weighting import WEIGHTINGS

    cfg = _plugin(raw, where, WEIGHTINGS)
    if cfg.name != "equal" and not strategies.get(strategy).weighs_tasks:
        joint = [n for n in strategies.names() if strategies.get(n).weighs_tasks]
        raise ValueError(f"{where}: {strategy} trains one task per model or stage, or trains nothing, so it has "
                         f"no task losses to weigh; remove the key (weightings apply to: {', '.join(joint)})")
    return cfg


def _check_weighting_values(cfg: PluginConfig, tasks: int, where: str) -> None:
    """The method's own value checks, some of which depend on the number of tasks (Krum needs 3)."""
    if cfg.name == "equal" or tasks < 2:  # one task: the trainer uses equal weights (nothing to weigh)
        return
    import torch

    from bench.weighting import build

    build(cfg.name, cfg.params, torch.ones(tasks), where=where)


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
    raw = mapping(raw, where)
    check_params(TrainConfig, raw, where)
    check_train_values(merge_train(TrainConfig(), raw), where)


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):  # one number is ambiguous: a count, or a seed?
        raise ValueError(f"seeds: expected a list of integers, got {raw!r}: write [0, 1, 2] for three seeds, or "
                         f"[{raw}] for seed {raw} alone")
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise ValueError(f"seeds: expected a non-empty list of integers, got {raw!r}")
    check_value(raw, Annotated[list[int], SEEDS], "seeds")
    if len(set(raw)) != len(raw):
        raise ValueError(f"seeds: repeated seed in {raw}")
    return tuple(raw)
