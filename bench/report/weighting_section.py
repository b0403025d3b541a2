"""The report's weighting section: what each weighting method (bench/weighting) did, and whether it beat
the reference entry. Shown when a suite's multi-task entries use a method other than `equal`, or
measured the cosines between task gradients (`grad_cosine_every`).

Per dataset, over its trained multi-task entries (cells read from the store: the record's config names
the method, the cell's history.csv holds its weights, cosines and step times):
- a table: method and loss weights, architecture, training time per step (the median over epochs after
  the first, which pays for warm-up; mean ± std over seeds) and its ratio to the reference, the mean
  cosine between task gradients on the shared parameters per pair of tasks, the probe's cost, and the
  weights of the last epoch;
- the reference: the first entry whose method is `equal` among those of the same strategy and backbone
  (a suite lists the hand-tuned weights first to compare against them);
- each entry against the reference per task: the paired difference of the primary test metric over
  seeds, its 95% t-interval and the Holm-adjusted p over the dataset's comparisons (win / tie / loss);
- figures: per-task weights over training, and the gradient cosines over training, one panel per entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.kinds import TaskSpec
from bench.record import Record
from bench.report import ReportData, figures
from bench.report.stats import fmt_mean_std, holm, mean_std, pair_by_seed, paired_difference, win_tie_loss

EQUAL = {"name": "equal", "params": {}}  # the method of records from before the weighting key


@dataclass
class Entry:
    """One multi-task suite entry on one dataset: its cells by seed, with their histories."""

    id: str
    strategy: str
    backbone: dict
    method: dict  # {"name": ..., "params": {...}}
    loss_weights: dict[str, float]
    tasks: tuple[str, ...]
    specs: dict[str, TaskSpec]
    records: dict[int, Record] = field(default_factory=dict)  # seed -> record
    histories: dict[int, pd.DataFrame] = field(default_factory=dict)  # seed -> history.csv

    @property
    def label(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.method["params"].items()))
        return self.method["name"] + (f" ({params})" if params else "")


def weighting(d: ReportData) -> str:
    entries = _entries(d)
    if not any(e.method["name"] != "equal" or _has(e, "grad_cos_") for es in entries.values() for e in es):
        return ""
    parts = ["## Weighting methods", INTRO]
    for ds, es in entries.items():
        refs = {e.id: _reference(e, es) for e in es}
        parts.append(f"### {ds} / weighting methods\n\n" + d.table(f"weighting_{ds}", _table(es, refs)))
        parts.append(_comparison(d, f"weighting_vs_reference_{ds}", es, refs))
        weights = {e.id: _curves(e, [f"weight_{t}" for t in e.tasks], list(e.tasks)) for e in es}
        path = figures.panel_lines(d.fig_dir / f"weights_{ds}.png", f"{ds}: per-task weights over training "
                                   "(mean over seeds)", weights, ylabel="weight", log=True,
                                   empty="no per-task weights")
        parts.append(f"![weights {ds}]({d.figure_link(path)})")
        pairs = _pairs(es[0].tasks)
        cosines = {e.id: _curves(e, [_cos(a, b) for a, b in pairs], [f"{a}·{b}" for a, b in pairs])
                   for e in es if _has(e, "grad_cos_")}
        if cosines:
            path = figures.panel_lines(d.fig_dir / f"grad_cosines_{ds}.png", f"{ds}: cosine between task gradients "
                                       "on the shared parameters (mean over seeds)", cosines, ylabel="cosine",
                                       hline=0.0, ylim=(-1.0, 1.0))
            parts.append(f"![gradient cosines {ds}]({d.figure_link(path)})")
    return "\n\n".join(parts)


INTRO = ("`step ms` is the training time per step (median over the epochs after the first, mean ± std over "
         "seeds); `x ref` its ratio to the reference entry's, the first entry with equal weights of the same "
         "strategy and backbone (marked *ref*). `cos a·b` is the cosine between the two tasks' gradients on the "
         "shared parameters, measured on a training batch every `grad_cosine_every` steps and averaged over the "
         "measurements, epochs and seeds: below 0 the tasks pull the shared weights apart. Each measurement "
         "costs one forward and T backward passes; `probe %` is its time over the training time (not counted "
         "in `step ms`). `last weights` are the method's mean per-task weights in the last epoch (n/a: an "
         "aggregator that does not combine the task gradients linearly). In the figures, look for weights "
         "that drift far from 1 (a method that silences a task) and for cosines that stay negative.")


def _entries(d: ReportData) -> dict[str, list[Entry]]:
    """dataset -> its multi-task entries trained jointly, in suite order (cells trained in stages, one
    task each, and records without a history are left out)."""
    rank = {e.id: i for i, e in enumerate(d.manifest.strategies)}
    out: dict[str, dict[str, Entry]] = {}
    for r in sorted(d.records, key=lambda r: rank.get(r.strategy, len(rank))):
        if r.status != "done" or not r.multi_task or r.members or r.seed is None:
            continue
        history = d.history(r.cell)
        if history is None or ("stage" in history and history.stage.notna().any()):
            continue
        by_id = out.setdefault(r.dataset, {})
        if r.strategy not in by_id:
            cfg = r.config
            by_id[r.strategy] = Entry(
                id=r.strategy, strategy=r.strategy_name, backbone=cfg.get("backbone", {}),
                method=cfg.get("strategy", {}).get("weighting", EQUAL),
                loss_weights=cfg.get("train", {}).get("loss_weights", {}), tasks=tuple(r.tasks),
                specs={t: TaskSpec.from_dict(s) for t, s in r.specs.items()})
        by_id[r.strategy].records[r.seed] = r
        by_id[r.strategy].histories[r.seed] = history
    return {ds: list(es.values()) for ds, es in out.items()}


def _reference(entry: Entry, entries: list[Entry]) -> Entry | None:
    return next((e for e in entries if e.method["name"] == "equal" and e.strategy == entry.strategy
                 and e.backbone == entry.backbone and e.tasks == entry.tasks), None)


def _has(entry: Entry, prefix: str) -> bool:
    return any(c.startswith(prefix) for h in entry.histories.values() for c in h.columns)


def _pairs(tasks: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]]


def _cos(a: str, b: str) -> str:
    return f"grad_cos_{a}_vs_{b}"  # the trainer's history column (bench/weighting/probe.py)


def _step_ms(entry: Entry) -> list[float]:
    """Per seed, the median step time over the epochs after the first (all of them if there is one)."""
    out = []
    for h in entry.histories.values():
        if "step_ms" in h:
            out.append(float(h.step_ms.iloc[1:].median() if len(h) > 1 else h.step_ms.iloc[0]))
    return out


def _table(entries: list[Entry], refs: dict[str, Entry | None]) -> list[dict]:
    rows = []
    for e in entries:
        ref, steps = refs[e.id], _step_ms(e)
        ref_steps = _step_ms(ref) if ref is not None else []
        row = {"entry": e.id + (" *ref*" if ref is e else ""), "method": e.label,
               "loss weights": ", ".join(f"{t} {e.loss_weights.get(t, 1.0):g}" for t in e.tasks),
               "strategy": e.strategy, "step ms": fmt_mean_std(steps, 1, 1),
               "x ref": f"{np.mean(steps) / np.mean(ref_steps):.2f}" if steps and ref_steps else "-"}
        for a, b in _pairs(e.tasks):
            row[f"cos {a}·{b}"] = fmt_mean_std([h[_cos(a, b)].mean() for h in e.histories.values() if _cos(a, b) in h], 1, 3)
        row["probe %"] = _probe_share(e)
        row["last weights"] = ", ".join(f"{t} {_last(e, f'weight_{t}')}" for t in e.tasks)
        rows.append({**row, "n": len(e.records)})
    return rows


def _probe_share(entry: Entry) -> str:
    probe = sum(h.grad_cos_seconds.sum() for h in entry.histories.values() if "grad_cos_seconds" in h)
    train = sum(h.train_seconds.sum() for h in entry.histories.values() if "train_seconds" in h)
    return f"{100 * probe / train:.0f}" if probe and train else "-"


def _last(entry: Entry, column: str) -> str:
    values = [h[column].iloc[-1] for h in entry.histories.values() if column in h]
    m, _, n = mean_std(values)
    return "n/a" if n == 0 else f"{m:.3g}"


def _comparison(d: ReportData, name: str, entries: list[Entry], refs: dict[str, Entry | None]) -> str:
    """Each entry against its reference, per task, on the primary test metric, paired by seed."""
    rows = []
    for e in entries:
        ref = refs[e.id]
        if ref is None or ref is e:
            continue
        for t, spec in e.specs.items():
            metric, (scale, digits) = spec.primary, spec.display
            seeds, a, b = pair_by_seed({s: r.test[t][metric] for s, r in e.records.items()},
                                       {s: r.test[t][metric] for s, r in ref.records.items() if t in r.test})
            if not seeds:
                continue
            diff = paired_difference(a, b)
            rows.append({"entry": e.id, "vs": ref.id, "task": t, "metric": spec.unit,
                         "entry value": fmt_mean_std(a, scale, digits), "reference": fmt_mean_std(b, scale, digits),
                         "difference": f"{diff.mean * scale:+.{digits}f}",
                         "95% CI": "-" if math.isnan(diff.low) else
                         f"[{diff.low * scale:+.{digits}f}, {diff.high * scale:+.{digits}f}]",
                         "p": diff.p, "higher": spec.higher_is_better, "n": diff.n, "_diff": diff.mean})
    if not rows:
        return ""
    adjusted = holm([r["p"] for r in rows])
    for r, p in zip(rows, adjusted):
        r["Holm p"] = "-" if math.isnan(p) else f"{p:.3g}"
        r["verdict"] = win_tie_loss(r.pop("_diff"), p, r.pop("higher"))
        r.pop("p")
    return ("Against the reference, per task on its primary test metric (accuracy in points, MAE raw): the mean "
            "over seeds of entry - reference, paired by seed, with its 95% t-interval; Holm's correction runs over "
            "every row of this table. `win` / `loss`: a difference that survives the correction at 0.05, in the "
            "good / bad direction (lower is better for MAE); `tie`: within the seed noise.\n\n"
            + d.table(name, rows))


def _curves(entry: Entry, columns: list[str], labels: list[str]) -> dict[str, pd.Series]:
    """label -> the column's mean over seeds by epoch (rows in history order); missing columns left out."""
    out = {}
    for col, label in zip(columns, labels):
        frames = [h[col].reset_index(drop=True) for h in entry.histories.values() if col in h]
        if frames:
            out[label] = pd.concat(frames, axis=1).mean(axis=1, skipna=False)
    return out
