"""The grid: Suite -> [Cell], one pure function.

datasets x strategies x seeds, where a strategy may split a dataset's tasks into several cells
(STL: one per task). Each cell has a readable deterministic name, used as store key, log prefix and
report label, e.g. `cifar10__stl(task=class10)__seed0`, and a key hashing its fully resolved config
together with the code version, so a cached result is reused only for the same config and code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.config import DatasetConfig, PluginConfig, StrategyConfig, Suite, SuiteError, TrainConfig, merge_train


@dataclass(frozen=True)
class Cell:
    suite: str
    dataset: DatasetConfig
    strategy: StrategyConfig
    tasks: tuple[str, ...]
    seed: int
    backbone: PluginConfig
    train: TrainConfig
    split: bool  # the strategy splits the dataset's tasks into several cells (name shows task=)

    @property
    def name(self) -> str:
        params = dict(self.strategy.params)
        if self.split:
            params["task"] = "+".join(self.tasks)
        elif self.strategy.tasks:
            params["tasks"] = "+".join(self.tasks)
        inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(params.items()))
        label = f"{self.strategy.id}({inner})" if inner else self.strategy.id
        return f"{self.dataset.name}__{label}__seed{self.seed}"

    def resolved(self) -> dict:
        """Everything that determines the result, as plain JSON-able data."""
        return {
            "suite": self.suite, "dataset": dataclasses.asdict(self.dataset),
            "strategy": dataclasses.asdict(self.strategy), "tasks": list(self.tasks),
            "seed": self.seed, "backbone": dataclasses.asdict(self.backbone),
            "train": dataclasses.asdict(self.train),
        }

    @property
    def key(self) -> str:
        blob = json.dumps({"config": self.resolved(), "code": code_version()}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_short(x) for x in v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_short(x)}" for k, x in sorted(v.items())) + "}"
    return str(v)


def expand(suite: Suite) -> list[Cell]:
    """All cells of a suite, in a stable order (dataset, strategy, seed, task subset)."""
    from bench.strategies import STRATEGIES

    cells = []
    for ds in suite.datasets:
        for st in suite.strategies:
            strategy = STRATEGIES.get(st.name)(**st.params)
            subsets = strategy.cell_tasks(st.tasks or ds.tasks)
            train = merge_train(suite.train, ds.train, st.train)
            _check_loss_weights(train, ds, suite.path)
            for seed in suite.seeds:
                for tasks in subsets:
                    cells.append(Cell(suite=suite.name, dataset=ds, strategy=st, tasks=tasks, seed=seed,
                                      backbone=st.backbone or suite.backbone, train=train,
                                      split=len(subsets) > 1))
    if not cells:
        raise SuiteError(f"{suite.path}: the grid is empty")
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise SuiteError(f"{suite.path}: two cells share a name; give strategy entries distinct ids")
    return cells


def _check_loss_weights(train: TrainConfig, ds: DatasetConfig, path: str) -> None:
    unknown = set(train.loss_weights) - set(ds.tasks)
    if unknown:
        raise SuiteError(f"{path}: train.loss_weights: {sorted(unknown)} not among dataset {ds.name}'s "
                         f"tasks {list(ds.tasks)}")


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the package source: any code change invalidates cached cells."""
    h = hashlib.sha256()
    pkg = Path(__file__).parent
    for path in sorted(pkg.rglob("*.py")):
        h.update(str(path.relative_to(pkg)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
