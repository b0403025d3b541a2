"""The grid: Suite -> [Cell], one pure function, plus each cell's key and the suite's manifest.

datasets x strategies x seeds, where a strategy may split a dataset's tasks into several cells
(STL: one per task). Each cell has a readable deterministic name, used as store key, log prefix and
report label, e.g. `cifar10__stl(task=class10)__seed0`, `freq3__pcgrad__seed0` (an entry's own id) or
`cifar10__sequential_lwf(order=class10+animal,stage_epochs=10)__seed0` (a strategy's params), and a
key hashing its fully resolved config together with the code its training runs (CORE_TRAINING_CODE
plus the modules of its dataset loader, backbone, strategy classes and the models they build), so a
stored result is reused only for the same config and code.
Editing the report, the CLI or a plug-in the cell does not use leaves its key alone.

A combining entry (an ensemble) gets one seed-less cell per dataset, named by its parameters and
member seeds, e.g. `cifar10__ensemble(of=hard_share,seeds=0+1+2)`. Its members (entry `of`'s cells
for those seeds, added to the grid when a seed is not among the suite's) come before it, and its key
includes their keys, so it is recomputed whenever a member's config or code changes.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path

from bench import record as R
from bench.settings import DatasetConfig, PluginConfig, StrategyConfig, Suite, SuiteError, TrainConfig, merge_train

# The modules every cell's training runs besides its own plug-ins, relative to bench/ (a folder
# stands for every .py file under it). A cell's key hashes them, so editing one marks the cells it
# trained stale. train_cell.py seeds, sets the numerics, draws the backbone's statistics sample,
# predicts the test set and computes the stored metrics and loss gallery; the trainer's schedules,
# precision and augmentation (the kornia pipeline, and the label-map contract of the fast path) are
# modules of their own, and its step goes through the weighting package and, on CUDA, cuda_graph.py.
# Not in: the runner's bookkeeping (attempts, records, progress), config parsing (the resolved config
# is hashed itself), the grid, store, record, registry, report and CLI. The modules of the task
# kinds, dataset loader, backbone and strategy a cell uses are added per cell (found from the
# registries), with the modules of their own folders they import (where a plug-in module defers its
# torch side to a sibling, e.g. models/dual_stream_net.py). models/nets.py holds the multi-task
# models every strategy builds.
CORE_TRAINING_CODE = ("trainer.py", "train_cell.py", "schedules.py", "precision.py", "augment/__init__.py",
                      "augment/ops.py", "kinds/__init__.py", "kinds/heads.py", "data/__init__.py", "models/__init__.py",
                      "models/nets.py", "weighting", "cuda_graph.py")
COMBINE_CODE = ("combine.py",)  # also run by a cell combined from members (an ensemble)
PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Cell:
    suite: str
    dataset: DatasetConfig
    strategy: StrategyConfig
    tasks: tuple[str, ...]
    seed: int | None  # None for a cell combined from members of several seeds
    backbone: PluginConfig
    train: TrainConfig
    split: bool  # the strategy splits the dataset's tasks into several cells (name shows task=)
    members: tuple[Cell, ...] = ()  # cells whose stored predictions this one combines; () = it trains

    @property
    def name(self) -> str:
        # An entry with an id of its own is named by it alone: the id tells it apart, and its params
        # (an LwF entry's ran to 160 characters) are in its key and its record. Without one, the params
        # tell apart two entries of one strategy; mapping-valued ones (e.g. heads) would make unreadable
        # names and stay in the key only.
        params = {}
        if self.strategy.id == self.strategy.name:
            params = {k: v for k, v in self.strategy.params.items() if not isinstance(v, dict)}
            if self.strategy.weighting.name != "equal":  # its parameters, like dict params, only in the key
                params["weighting"] = self.strategy.weighting.name
        if self.members:
            params["seeds"] = sorted({m.seed for m in self.members})
        if self.split:
            params["task"] = "+".join(self.tasks)
        elif self.strategy.tasks:
            params["tasks"] = "+".join(self.tasks)
        inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(params.items()))
        label = f"{self.strategy.id}({inner})" if inner else self.strategy.id
        return f"{self.dataset.name}__{label}" + ("" if self.seed is None else f"__seed{self.seed}")

    def resolved(self) -> dict:
        """Everything that determines the result, as plain JSON-able data."""
        out = {
            "suite": self.suite, "dataset": dataclasses.asdict(self.dataset),
            "strategy": dataclasses.asdict(self.strategy), "tasks": list(self.tasks),
            "seed": self.seed, "backbone": dataclasses.asdict(self.backbone),
            "train": dataclasses.asdict(self.train),
        }
        if self.members:
            out["members"] = {m.name: m.key for m in self.members}
        return out

    def code_files(self) -> tuple[str, ...]:
        """The bench/ files this cell's training runs: the core list, and the modules defining its
        dataset loader, backbone, strategy class with its bases and the model classes the strategy
        builds (found from the registered objects)."""
        from bench.data import DATASETS, declaration
        from bench.kinds import KINDS
        from bench.models import BACKBONES
        from bench.strategies import STRATEGIES

        parts = self.dataset.parts or (self.dataset,)  # a union: each part's loader and kinds
        loaders = [DATASETS.get(part.registered) for part in parts]
        kinds = [KINDS.get(kind) for part in parts for t, kind in declaration(part).kinds.items() if t in self.tasks]
        strategy = STRATEGIES.get(self.strategy.name)
        plugins = [*loaders, *(c for k in kinds for c in inspect.getmro(k)), BACKBONES.get(self.backbone.name),
                   *inspect.getmro(strategy)]
        own = _with_siblings({p for p in map(_package_path, plugins) if p} | set(strategy.builds))
        core = CORE_TRAINING_CODE + (COMBINE_CODE if self.members else ())
        return core + tuple(sorted(own - set(CORE_TRAINING_CODE)))

    def code(self) -> dict[str, str]:
        """Hashes of `code_files()`, as stored in the cell's record."""
        return R.code_hashes(self.code_files())

    @property
    def key(self) -> str:
        return R.make_key(self.resolved(), self.code())


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_short(x) for x in v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_short(x)}" for k, x in sorted(v.items())) + "}"
    return str(v)


def expand(suite: Suite) -> list[Cell]:
    """All cells of a suite, in a stable order: per dataset, the trained cells (strategy, seed, task
    subset; extra member seeds after the suite's), then the combined cells (ensembles)."""
    from bench.strategies import STRATEGIES

    strategies = {st.id: STRATEGIES.get(st.name)(**st.params) for st in suite.strategies}
    cells = []
    for ds in suite.datasets:
        trained: dict[tuple[str, int], list[Cell]] = {}  # (strategy id, seed) -> its cells
        for st in suite.strategies:
            if strategies[st.id].members() is None:
                for seed in _seeds(suite, st.id, strategies):
                    trained[st.id, seed] = _trained_cells(suite, ds, st, strategies[st.id], seed)
        cells += [c for group in trained.values() for c in group]
        for st in suite.strategies:
            m = strategies[st.id].members()
            if m is not None:
                cells.append(_combined_cell(suite, ds, st, [c for s in m.seeds for c in trained[m.of, s]]))
    if not cells:
        raise SuiteError(f"{suite.path}: the grid is empty")
    for cell in cells:
        _check_name(suite, cell)
    first: dict[str, Cell] = {}
    for cell in cells:
        other = first.setdefault(cell.name, cell)
        if other is not cell:
            entries = sorted({suite.strategies.index(c.strategy) for c in (other, cell)})
            raise SuiteError(f"{suite.path}: two cells are named {cell.name!r} (from "
                             f"{' and '.join(f'strategies[{i}]' for i in entries)}); give the entries distinct ids")
    return cells


def _check_name(suite: Suite, cell: Cell) -> None:
    """SuiteError unless the cell's name can be a folder of the store: short enough (MAX_CELL_NAME_BYTES)
    and without a path separator (a strategy parameter's text may hold one). An entry with its own
    id is named by the id alone, so the fix is an `id`."""
    from bench.store import MAX_CELL_NAME_BYTES

    i = suite.strategies.index(cell.strategy)
    size = len(cell.name.encode())
    problem = (f"is {size} bytes long, over the {MAX_CELL_NAME_BYTES} a results folder can take"
               if size > MAX_CELL_NAME_BYTES else "holds a path separator" if "/" in cell.name or "\\" in cell.name
               else None)
    if problem:
        fix = ("give the entry a short `id:` (an entry with its own id is named by it alone)"
               if cell.strategy.id == cell.strategy.name else "shorten its `id:` or the dataset entry's name")
        raise SuiteError(f"{suite.path}: strategies[{i}] ({cell.strategy.id}): its cell name {_shown(cell.name)} {problem}; "
                         f"{fix}")


def _shown(name: str, limit: int = 80) -> str:
    return repr(name) if len(name) <= limit else repr(name[:limit]) + "..."


def _seeds(suite: Suite, sid: str, strategies: dict) -> list[int]:
    """The suite's seeds, then any other seed an ensemble of entry `sid` needs (ascending)."""
    wanted = {s for st in strategies.values() if (m := st.members()) and m.of == sid for s in m.seeds}
    return list(suite.seeds) + sorted(wanted - set(suite.seeds))


def _trained_cells(suite: Suite, ds: DatasetConfig, st: StrategyConfig, strategy, seed: int) -> list[Cell]:
    try:  # a strategy's own checks against the dataset's tasks (e.g. a stage order)
        subsets = strategy.cell_tasks(st.tasks or ds.tasks)
    except ValueError as err:
        raise SuiteError(f"{suite.path}: strategies.{st.id} (dataset {ds.name}): {err}") from None
    train = merge_train(suite.train, ds.train, st.train)
    _check_loss_weights(train, ds, suite.path)
    if train.precision == "fp16" and st.weighting.name != "equal":
        raise SuiteError(f"{suite.path}: strategies.{st.id}.weighting: {st.weighting.name} with train.precision fp16; "
                         "the fp16 gradient scaler runs with equal weighting only: use precision bf16 or fp32")
    for tasks in subsets:
        try:
            check_cell_train(train, ds, tasks)
        except ValueError as err:
            raise SuiteError(f"{suite.path}: strategies.{st.id} on dataset {ds.name}: {err}") from None
    return [Cell(suite=suite.name, dataset=ds, strategy=st, tasks=tasks, seed=seed,
                 backbone=st.backbone or suite.backbone, train=train, split=len(subsets) > 1)
            for tasks in subsets]


def _combined_cell(suite: Suite, ds: DatasetConfig, st: StrategyConfig, members: list[Cell]) -> Cell:
    """One seed-less cell over the members' tasks; it records the members' backbone and training."""
    tasks = tuple(t for t in ds.tasks if any(t in m.tasks for m in members))
    _check_combinable(suite, ds, st, tasks)
    return Cell(suite=suite.name, dataset=ds, strategy=st, tasks=tasks, seed=None, backbone=members[0].backbone,
                train=members[0].train, split=False, members=tuple(members))


def _check_combinable(suite: Suite, ds: DatasetConfig, st: StrategyConfig, tasks: tuple[str, ...]) -> None:
    """SuiteError before any training when a combined cell would hold a task whose kind has no
    `combine` (segmentation masks, detection box lists: no sound average of stored predictions)."""
    from bench.data import declaration
    from bench.kinds import KINDS, TaskSpec

    kinds = {t: k for part in ds.parts or (ds,) for t, k in declaration(part).kinds.items() if t in tasks}
    bad = {t: k for t, k in kinds.items() if KINDS.get(k).combine is TaskSpec.combine}
    if bad:
        listed = ", ".join(f"{t} ({k})" for t, k in bad.items())
        raise SuiteError(f"{suite.path}: strategies.{st.id} (dataset {ds.name}): an ensemble combines stored "
                         f"predictions, and these tasks' kinds cannot be combined: {listed}; give the entry it "
                         "combines `tasks:` without them, or remove the ensemble")


def check_cell_train(train: TrainConfig, ds: DatasetConfig, tasks: tuple[str, ...]) -> None:
    """Checks of a cell's merged train settings against each other and its dataset's declaration:
    `plateau:` needs `schedule: plateau`, and every orientation op of its augmentation (the flip
    shorthand included) needs a label map for each class or regression task in play. ValueError
    naming the train key."""
    from bench.augment import Pipeline, shorthand_ops
    from bench.data import declaration

    if train.plateau and train.schedule != "plateau":
        raise ValueError(f"train.plateau: set, but schedule is {train.schedule!r}; set schedule: plateau too")
    kinds, maps = {}, {}
    for part in ds.parts or (ds,):
        decl = declaration(part)
        kinds.update({t: k for t, k in decl.kinds.items() if t in tasks})
        maps.update(decl.label_maps)
    shorthands = shorthand_ops(train.crop_pad, train.flip)
    where = [f"train.{'crop_pad' if o['op'] == 'crop' else 'flip'}" for o in shorthands]
    where += [f"train.augment[{i}]" for i in range(len(train.augment))]
    Pipeline(shorthands + list(train.augment), dataset=ds.name, label_maps=maps).check(kinds, where)


def _check_loss_weights(train: TrainConfig, ds: DatasetConfig, path: str) -> None:
    unknown = set(train.loss_weights) - set(ds.tasks)
    if unknown:
        raise SuiteError(f"{path}: train.loss_weights: {sorted(unknown)} not among dataset {ds.name}'s "
                         f"tasks {list(ds.tasks)}")


def _package_path(obj) -> str | None:
    """bench/-relative path of the module defining `obj`; None outside the package (e.g. `object`)."""
    source = getattr(inspect.getmodule(obj), "__file__", None)
    if source is None:
        return None
    path = Path(source).resolve()
    return path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else None


def _with_siblings(paths: set[str]) -> set[str]:
    """Plug-in modules plus the modules of their own folder that they import, transitively: e.g.
    data/digit_scenes.py reads MNIST through data/mnist.py, whose edits change its cells too."""
    out, todo = set(paths), list(paths)
    while todo:
        rel = todo.pop()
        folder, _, name = rel.rpartition("/")
        if not folder or name == "__init__.py":  # top-level modules import core or non-training code; a
            continue  # package's __init__ is core, and it imports every plug-in to register them
        for dotted in _bench_imports(PACKAGE / rel):
            path = _module_path(dotted)
            if path and path.rpartition("/")[0] == folder and path not in out:
                out.add(path)
                todo.append(path)
    return out


# Python 3.11's ast.parse is not safe from two threads at once (SystemError "AST constructor recursion
# depth mismatch", seen when two runs of one suite share a process as threads).
_PARSE = threading.Lock()


def _bench_imports(source: Path) -> set[str]:
    """Dotted names this module's `import bench...` / `from bench... import x` statements may load."""
    names = set()
    with _PARSE:
        tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("bench")}
    return names


def _module_path(dotted: str) -> str | None:
    """bench.data.mnist -> data/mnist.py, when that file exists (packages and attributes: None)."""
    path = PACKAGE.joinpath(*dotted.split(".")[1:]).with_suffix(".py")
    return path.relative_to(PACKAGE).as_posix() if path.is_file() else None


def manifest(suite: Suite, cells: list[Cell]) -> R.Manifest:
    """What the report needs of `suite`, for the store (results/<suite>/suite.json)."""
    from bench.strategies import STRATEGIES

    entries = []
    for st in suite.strategies:
        strategy = STRATEGIES.get(st.name)(**st.params)
        members = strategy.members()
        entries.append(R.Entry(id=st.id, name=st.name, multi_task=strategy.multi_task,
                               of=members.of if members else None, seeds=tuple(members.seeds) if members else (),
                               reference=suite.baselines.get(st.id, ())))
    return R.Manifest(name=suite.name, description=suite.description, path=suite.path, seeds=suite.seeds,
                      select=suite.train.select, strategies=tuple(entries),
                      reference=dataclasses.asdict(suite.reference),
                      datasets=tuple(R.DatasetEntry(name=d.name, tasks=d.tasks) for d in suite.datasets),
                      cells=tuple(c.name for c in cells), keys={c.name: c.key for c in cells},
                      fingerprint=R.suite_fingerprint(suite.path) if Path(suite.path).is_file() else "")
