"""The one schema of a stored cell (`Record`), the suite manifest, and the hashes behind cell keys.

A cell's record is `results/<suite>/<cell>/record.json`. The store writes it last, when the cell's
attempt finishes, for trained and combined (ensemble) cells alike, and the report reads nothing
else besides `predictions.npz` and `history.csv` next to it. It holds the cell's identity, outcome,
key, the code files its training ran with their hashes, provenance and results. `read_record`
validates: a truncated, malformed or incomplete record raises `RecordError`, naming the file and
the problem.

Key = hash(resolved config + hashes of the code files the cell's training runs). bench/grid.py
chooses those files from the registered plug-ins; this module hashes them and can hash them again
later, so staleness can be judged from the code alone when the suite file is gone.
`code_version` (every .py file of the package) goes into the provenance only.

Schema 1, before this module: `metrics.json` + `config.json` per cell. `read_legacy` upgrades
them when read, without rewriting them. Their keys came from the old scheme (whole package
source), so they always count as stale.

The suite manifest (`results/<suite>/suite.json`, `Manifest`) is what the report needs of the
suite: its strategy entries in order, datasets with their task order, seeds, the cells of the grid.
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from bench.registry import matches_hint

SCHEMA = 2
MANIFEST_SCHEMA = 1
STATUSES = ("done", "failed", "diverged", "skipped")
PACKAGE = Path(__file__).resolve().parent  # code paths in records are relative to it
# Schema 1 stored no multi_task flag; of the strategies of that time only `stl` was single-task.
LEGACY_SINGLE_TASK = frozenset({"stl"})


class RecordError(ValueError):
    """A stored file (record, manifest) is damaged or incomplete. The message names the file."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True, kw_only=True)
class Record:
    """One cell's stored outcome. Results are empty unless status is done."""

    # identity
    suite: str
    cell: str
    dataset: str
    strategy: str  # the suite entry's id
    strategy_name: str  # the registered strategy
    multi_task: bool  # False for single-task baselines, the reference of delta_m
    tasks: tuple[str, ...]
    seed: int | None  # None for a cell combined over seeds
    members: dict[str, str] = field(default_factory=dict)  # combined cells: member cell -> its key
    # outcome
    status: str  # done | failed | diverged | skipped
    reason: str = ""  # why it is not done: "ExceptionType: message"
    # reuse and provenance
    key: str
    config: dict[str, Any] = field(default_factory=dict)  # the fully resolved cell config
    code: dict[str, str] = field(default_factory=dict)  # package-relative path -> hash, of the training's code
    provenance: dict[str, Any] = field(default_factory=dict)  # code_version, git_commit, torch, device, time...
    # results
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> metric -> value
    val: dict[str, dict[str, float]] = field(default_factory=dict)  # at the best epoch
    best_epoch: int | None = None
    epochs: int | None = None  # epochs trained, all stages (history rows); None when combined
    params: int | None = None  # trainable parameters (combined: the members' sum)
    train_seconds: float = 0.0  # in training steps only (combined: the members' sum)
    wall_seconds: float = 0.0  # the whole attempt
    images_per_second: float | None = None  # training throughput
    peak_memory_mb: float | None = None  # CUDA only
    # what the training computed with (bench/precision.py: Numerics, plus whether the CUDA graph ran)
    numerics: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # the dataset's caveats, for the report
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> TaskSpec as a dict
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific (R matrix, ensemble gains)
    schema: int = SCHEMA  # 1: upgraded from metrics.json + config.json when read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, path: Path | str) -> "Record":
        """Validate a parsed record.json; RecordError names `path` and what is wrong."""
        if isinstance(raw, dict) and raw.get("schema") != SCHEMA:
            raise RecordError(path, f"schema {raw.get('schema')!r}; this version reads schema {SCHEMA}")
        return _build(cls, raw, path)


def read_record(path: Path) -> Record:
    return Record.from_json(read_json(path), path)


def read_legacy(folder: Path) -> Record:
    """A schema-1 cell (metrics.json written last, config.json with provenance) as a Record."""
    m_path, c_path = folder / "metrics.json", folder / "config.json"
    metrics, config = read_json(m_path), read_json(c_path)
    for path, raw, keys in ((m_path, metrics, ("status", "key", "cell", "dataset", "strategy", "strategy_name",
                                               "tasks", "seed")), (c_path, config, ("suite",))):
        if not isinstance(raw, dict):
            raise RecordError(path, "expected a JSON object")
        missing = [k for k in keys if k not in raw]
        if missing:
            raise RecordError(path, f"incomplete: missing {', '.join(missing)}")
    results = {f.name: metrics[f.name] for f in fields(Record) if f.name in metrics}
    return _build(Record, {
        **results, "schema": 1, "suite": config["suite"], "members": config.get("members", {}),
        "multi_task": metrics["strategy_name"] not in LEGACY_SINGLE_TASK,
        "config": {k: v for k, v in config.items() if k not in ("key", "cell", "provenance")},
        "provenance": config.get("provenance", {}),
    }, m_path)


def read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(path, f"unreadable ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(path, f"not valid JSON ({err.msg}: line {err.lineno}, column {err.colno}; "
                                "truncated?)") from None


def _build(cls: type, raw: Any, path: Path | str):
    """cls(**raw) after checking names, required fields and JSON types; tuples come back from lists."""
    if not isinstance(raw, dict):
        raise RecordError(path, f"expected a JSON object, got {type(raw).__name__}")
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RecordError(path, f"unknown field(s) {', '.join(unknown)}")
    missing = [n for n, f in known.items() if n not in raw and _required(f)]
    if missing:
        raise RecordError(path, f"incomplete: missing {', '.join(missing)}")
    for name, value in raw.items():
        if not matches_hint(value, hints[name]):
            raise RecordError(path, f"{name}: expected {hints[name]}, got {value!r:.80}")
    values = {n: tuple(v) if isinstance(v, list) and typing.get_origin(hints[n]) is tuple else v
              for n, v in raw.items()}
    obj = cls(**values)
    if isinstance(obj, Record):
        _check_outcome(obj, path)
    return obj


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _check_outcome(r: Record, path: Path | str) -> None:
    if r.status not in STATUSES:
        raise RecordError(path, f"status {r.status!r}; valid: {', '.join(STATUSES)}")
    if r.status == "done" and set(r.test) != set(r.tasks):
        raise RecordError(path, f"incomplete: test metrics for {sorted(r.test)}, tasks {list(r.tasks)}")


# ---- the suite manifest ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Entry:
    """One strategy entry of the suite, as the report needs it."""

    id: str
    name: str  # the registered strategy
    multi_task: bool = True
    of: str | None = None  # a combining entry (ensemble): the entry whose cells it combines
    seeds: tuple[int, ...] = ()  # ... and their seeds
    reference: tuple[str, ...] = ()  # single-task entries the suite names as its baseline (`reference:`)


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    name: str
    tasks: tuple[str, ...]  # in the suite's order


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What the report needs of a suite, stored beside its cells by `bench run`."""

    name: str
    description: str = ""
    path: str | None = None  # the suite file; None when rebuilt from records
    seeds: tuple[int, ...] = ()
    select: str = "loss"  # the suite's best-epoch selection (train.select)
    datasets: tuple[DatasetEntry, ...] = ()
    strategies: tuple[Entry, ...] = ()  # in suite order
    cells: tuple[str, ...] = ()  # the grid's cells, in grid order; () = every cell in the store
    keys: dict[str, str] = field(default_factory=dict)  # cell -> its key when the manifest was written
    fingerprint: str = ""  # `suite_fingerprint` of the suite file then: keys still hold while it matches
    # what the report compares with (config.Reference): source, published {id: {task: value}}, tuned suite
    reference: dict[str, Any] = field(default_factory=dict)
    schema: int = MANIFEST_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, path: Path | str) -> "Manifest":
        if not isinstance(raw, dict) or raw.get("schema") != MANIFEST_SCHEMA:
            raise RecordError(path, f"not a suite manifest of schema {MANIFEST_SCHEMA}")
        nested = {"datasets": DatasetEntry, "strategies": Entry}
        for key, kind in nested.items():
            if not isinstance(raw.get(key, []), list):
                raise RecordError(path, f"{key}: expected a list")
        entries = {k: [_build(kind, e, path) for e in raw.get(k, [])] for k, kind in nested.items()}
        return _build(cls, {**raw, **entries}, path)

    @classmethod
    def from_records(cls, name: str, records: list[Record]) -> "Manifest":
        """A manifest for a store that has none (schema 1): entries in the order the cells were trained."""
        ordered = sorted(records, key=lambda r: (bool(r.members), str(r.provenance.get("time", "")), r.cell))
        by_cell = {r.cell: r for r in records}
        datasets, entries = {}, {}
        for r in ordered:
            datasets.setdefault(r.dataset, tuple(r.config.get("dataset", {}).get("tasks", r.tasks)))
            members = [by_cell[m] for m in r.members if m in by_cell]
            entries.setdefault(r.strategy, Entry(
                id=r.strategy, name=r.strategy_name, multi_task=r.multi_task,
                of=members[0].strategy if members else None,
                seeds=tuple(sorted({m.seed for m in members if m.seed is not None}))))
        return cls(name=name, description="(No suite manifest in the store: entries and datasets as the records "
                                          "name them, in the order they were trained.)",
                   seeds=tuple(sorted({r.seed for r in records if r.seed is not None and not r.members})),
                   select=next((r.config.get("train", {}).get("select", "loss") for r in ordered), "loss"),
                   datasets=tuple(DatasetEntry(name=n, tasks=t) for n, t in datasets.items()),
                   strategies=tuple(entries.values()))


# ---- code hashes, keys and staleness ---------------------------------------------------------
@lru_cache(maxsize=None)
def file_hash(path: Path) -> str:
    """A source file's hash. Cached: a process runs the code as it was when first hashed."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def code_hashes(paths: Iterable[str]) -> dict[str, str]:
    """Package-relative path -> hash; a folder (e.g. "kinds") stands for every .py file under it."""
    out = {}
    for rel in paths:
        target = PACKAGE / rel
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for f in files:
            out[f.relative_to(PACKAGE).as_posix()] = file_hash(f)
    return dict(sorted(out.items()))


def make_key(config: dict[str, Any], code: dict[str, str]) -> str:
    """A cell's key: its resolved config and the hashes of the code its training runs."""
    blob = json.dumps({"config": config, "code": code}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def changed_code(record: Record) -> list[str]:
    """The record's code files whose source differs now, or that are gone."""
    return [rel for rel, h in record.code.items()
            if not (PACKAGE / rel).is_file() or file_hash(PACKAGE / rel) != h]


def stale_reason(record: Record, current_keys: dict[str, str] | None = None) -> str | None:
    """Why a finished record no longer matches, or None. Without `current_keys` (the suite's cells
    and keys now, when its file exists) only the code is compared."""
    if record.schema < SCHEMA:
        return "stored by an earlier version of the harness, whose keys hashed the whole package"
    changed = changed_code(record)
    if changed:
        return "training code changed: " + ", ".join(changed)
    if current_keys is None:
        return None
    if record.cell not in current_keys:
        return "no longer in the suite"
    if current_keys[record.cell] != record.key:
        return "config changed" + (" (its own or a member's)" if record.members else "")
    return None


# What turns a suite file into cell keys, besides the code each cell's key covers: parsing and
# defaults (config), the grid and its resolved configs, and the key itself.
SUITE_TO_KEYS_CODE = ("config.py", "grid.py", "record.py", "registry.py")


def suite_fingerprint(path: Path | str) -> str:
    """A hash of a suite file's text and of the code that turns it into keys (SUITE_TO_KEYS_CODE).

    While a stored manifest's fingerprint matches the suite file's, the keys it lists are the keys
    the suite gives now (a cell's own code is checked apart, against its record), so `bench report`
    can judge staleness without parsing the suite, which imports the training side (torch).
    """
    h = hashlib.sha256(Path(path).read_bytes())
    h.update(json.dumps(code_hashes(SUITE_TO_KEYS_CODE), sort_keys=True).encode())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the whole package source: provenance only, never part of a key."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
