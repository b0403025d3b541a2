"""Matched baselines: which single-task entry each multi-task row of a dataset is compared with.

A reference for task t is a single-task entry (`stl`, or an entry whose cells each train one task,
such as `{name: hard_share, id: cls_only, tasks: [pair]}`) with a finished cell for t. A suite
names a row's references with `reference: <entry id>` (or a list of ids, one per task); otherwise
the report picks, per task, the first single-task entry in suite order with the same backbone,
preferring one with the same training budget (epochs). Without one the row has "no matched STL"
for that task, rather than a comparison of unlike models (seed 000's freq3: hard sharing on a
convnet against STL on the dual-stream network). Differences that remain are flagged: the budget
(a sequential row's 10 + 10 epochs against STL's 25), the parameter count, the number of models
(an ensemble of three against one STL model per task), and a backbone the suite chose to differ.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.record import Record
from bench.report.data import ReportData

PARAMS_TOLERANCE = 0.1  # parameter counts within 10% of the reference's are not flagged


@dataclass(frozen=True)
class Match:
    """A multi-task row's references on one dataset."""

    strategy: str
    references: dict[str, str] = field(default_factory=dict)  # task -> reference entry id
    unmatched: dict[str, str] = field(default_factory=dict)  # task -> why it has no matched reference

    @property
    def unmatched_notes(self) -> list[str]:
        """One line per reason, naming its tasks: "no single-task entry with backbone X (a, b, c)"."""
        reasons: dict[str, list[str]] = {}
        for task, why in self.unmatched.items():
            reasons.setdefault(why, []).append(task)
        return [f"{why} ({', '.join(tasks)})" for why, tasks in reasons.items()]
    flags: tuple[str, ...] = ()  # differences that remain between the row and its references
    paired: bool = True  # its seeds pair with the reference's; False for a combined (seed-less) entry

    @property
    def complete(self) -> bool:
        """Every task of the row has a reference (delta_m needs all of them)."""
        return bool(self.references) and not self.unmatched


def matches(d: ReportData, dataset: str) -> dict[str, Match]:
    """Match of every multi-task entry of `dataset` (single-task entries are references, not rows)."""
    return d.cached(("matches", dataset), lambda: {
        s: match(d, dataset, s) for s in d.strategies(dataset) if not d.single_task(s, dataset)})


def match(d: ReportData, dataset: str, strategy: str) -> Match:
    records = d.cells(dataset, strategy)
    tasks = list(dict.fromkeys(t for r in records for t in r.tasks))
    entry = d.entries.get(strategy)
    explicit = entry.reference if entry is not None else ()
    trained = _trained(d, dataset, strategy)  # the cells whose training the row stands for
    refs, unmatched = {}, {}
    for t in tasks:
        sid, why = _explicit(d, dataset, explicit, t) if explicit else _automatic(d, dataset, trained, t)
        if sid is None:
            unmatched[t] = why
        else:
            refs[t] = sid
    flags = _flags(d, dataset, records, trained, refs) if refs else ()
    return Match(strategy=strategy, references=refs, unmatched=unmatched, flags=tuple(flags),
                 paired=not any(r.members for r in records))


def _trained(d: ReportData, dataset: str, strategy: str) -> list[Record]:
    """The trained cells behind a row: its own, or for a combined entry its members."""
    records = d.cells(dataset, strategy)
    members = {m for r in records for m in r.members}
    if not members:
        return records
    return [r for r in d.done(dataset) if r.cell in members]


def _explicit(d: ReportData, dataset: str, ids: tuple[str, ...], task: str) -> tuple[str | None, str]:
    """(the named entry that trains `task` alone, "") or (None, why there is none)."""
    for sid in ids:
        if d.cells(dataset, sid, task) and d.single_task(sid, dataset):
            return sid, ""
    return None, f"reference {' / '.join(ids)} has no finished single-task cell of the task"


def _automatic(d: ReportData, dataset: str, trained: list[Record], task: str) -> tuple[str | None, str]:
    """(the first single-task entry for `task` with the same backbone, same budget preferred, "")
    or (None, why there is none)."""
    candidates = [s for s in d.strategies(dataset) if d.single_task(s, dataset) and d.cells(dataset, s, task)]
    if not candidates:
        return None, "no single-task entry trains the task"
    backbone = _common([_backbone(r) for r in trained])
    same = [s for s in candidates if _common([_backbone(r) for r in d.cells(dataset, s, task)]) == backbone]
    if not same:
        return None, f"no single-task entry with backbone {_backbone_name(backbone)}"
    budget = _budget(d, trained)
    return next((s for s in same if _budget(d, d.cells(dataset, s, task)) == budget), same[0]), ""


def _flags(d: ReportData, dataset: str, records: list[Record], trained: list[Record], refs: dict[str, str]) -> list[str]:
    flags = []
    ref_cells = {t: d.cells(dataset, s, t) for t, s in refs.items()}
    backbone = _common([_backbone(r) for r in trained])
    other = {_backbone_name(_common([_backbone(r) for r in cells])) for cells in ref_cells.values()}
    other.discard(_backbone_name(backbone))
    if other:
        flags.append(f"backbone {_backbone_name(backbone)} vs {', '.join(sorted(other))}")
    budget = _budget(d, trained)
    ref_budgets = sorted({b for cells in ref_cells.values() if (b := _budget(d, cells)) is not None})
    if budget is not None and ref_budgets and ref_budgets != [budget]:
        stages = _common([len(r.extra.get("stage_best_epochs") or [None]) for r in trained])
        in_stages = f" in {stages} stages" if stages and stages > 1 else ""
        flags.append(f"budget {budget} epochs{in_stages} vs {', '.join(map(str, ref_budgets))}")
    models = _common([len([m for m in r.members if m in {c.cell for c in trained}]) for r in records if r.members])
    if models:
        per_task = Counter(t for c in trained for t in c.tasks)
        flags.append(f"{max(per_task.values())} models per task vs 1")
    ratio = _params(records) / sum(_params(cells) for cells in ref_cells.values()) if ref_cells else float("nan")
    if ratio == ratio and abs(ratio - 1) > PARAMS_TOLERANCE:
        flags.append(f"params ×{ratio:.2f}")
    return flags


def _params(records: list[Record]) -> float:
    """Mean trainable parameters over the cells (an ensemble's record holds its members' sum)."""
    values = [r.params for r in records if r.params is not None]
    return sum(values) / len(values) if values else float("nan")


def _backbone(r: Record) -> str:
    bb = r.config.get("backbone") or {}
    params = bb.get("params") or {}
    inner = ", ".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{bb.get('name', '?')}({inner})" if inner else str(bb.get("name", "?"))


def _backbone_name(backbone: str | None) -> str:
    return backbone if backbone is not None else "(mixed)"


def _budget(d: ReportData, records: list[Record]) -> int | None:
    """Epochs the cells trained (all stages), when they agree; None when unknown or mixed."""
    return _common([_epochs(d, r) for r in records])


def _epochs(d: ReportData, r: Record) -> int | None:
    if r.epochs is not None:
        return r.epochs
    history = d.history(r.cell)
    return len(history) if history is not None else None


def _common(values: list):
    """The one value all items share, else None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None
