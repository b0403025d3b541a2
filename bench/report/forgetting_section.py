"""The report's forgetting section: for every cell that stored an R matrix (sequential strategies).

Per dataset and strategy: the R matrix (mean over seeds), each task's drop from right after its
own stage to the end with pass/fail against the strategy's threshold, BWT and average final score
(mean ± std over seeds, n stated), and one grouped-bar figure per dataset. The arithmetic is in
`bench.report.forgetting`; cells are recognised by `extra["R"]`, never by strategy name.
"""

from __future__ import annotations

import numpy as np

from bench.kinds import TaskSpec
from bench.record import Record
from bench.report import figures
from bench.report.data import ReportData
from bench.report.forgetting import average_final, bwt, forgetting as summarise
from bench.report.stats import fmt_mean_std, mean_std

INTRO = ("R[k][j] is task j's test score (primary metric) after stage k; the diagonal is each task right "
         "after its own stage (its baseline). Drop % compares a task's final score with its baseline "
         "(positive = worse, also for MAE); BWT is the mean final - baseline over all but the last task "
         "(negative = forgetting). What to look for: fine-tuning's drops show how much plain sequential "
         "training forgets; a protection such as LwF works when its drops and BWT shrink towards 0 "
         "while its diagonal stays as high as fine-tuning's.")


def forgetting(d: ReportData) -> str:
    rank = {e.id: i for i, e in enumerate(d.manifest.strategies)}  # the suite's strategy order
    cells = sorted((r for r in d.records if r.status == "done" and "R" in r.extra),
                   key=lambda r: rank.get(r.strategy, len(rank)))
    if not cells:
        return ""
    parts = ["## Forgetting (sequential training)", INTRO]
    for ds in dict.fromkeys(r.dataset for r in cells):
        specs = d.specs(ds)
        by_strategy: dict[str, list[Record]] = {}
        for r in cells:
            if r.dataset == ds:
                by_strategy.setdefault(r.strategy, []).append(r)
        bars = {}
        for strategy, records in by_strategy.items():
            tasks = records[0].extra["stages"]
            Rs = np.array([r.extra["R"] for r in records], dtype=float)  # (seeds, stages, tasks)
            threshold = float(records[0].extra["forgetting_threshold"])
            parts.append(f"### {ds} / {strategy}\n\n" + _strategy_block(d, f"{ds}_{strategy}", tasks, Rs, threshold,
                                                                            specs))
            for j, t in enumerate(tasks):  # (baselines, finals) over seeds, in display units
                scale = specs[t].display[0]
                bars.setdefault(t, {})[strategy] = (Rs[:, j, j] * scale, Rs[:, -1, j] * scale)
        labels = {t: specs[t].unit for t in bars}
        path = figures.forgetting_bars(d.fig_dir / f"forgetting_{ds}.png",
                                       f"{ds}: baseline (own stage) vs final score per task", bars, labels)
        parts.append(f"![forgetting {ds}]({d.figure_link(path)})")
    return "\n\n".join(parts)


def _strategy_block(d: ReportData, name: str, tasks: list[str], Rs: np.ndarray, threshold: float,
                    specs: dict[str, TaskSpec]) -> str:
    higher = [specs[t].higher_is_better for t in tasks]
    per_seed = [summarise(R, higher, threshold) for R in Rs]
    mean_R = Rs.mean(0)
    r_table = [{"after stage": f"{k + 1}: {t}", **{u: _fmt(specs[u], mean_R[k, j]) for j, u in enumerate(tasks)}}
               for k, t in enumerate(tasks)]
    drops = np.array([f.drop_pct for f in per_seed])  # (seeds, tasks)
    task_table = []
    for j, t in enumerate(tasks):
        undefined = int(np.isnan(drops[:, j]).sum())  # seeds whose baseline was 0: a relative drop means nothing
        mean_drop = mean_std(drops[:, j])[0]
        task_table.append({
            "task": t, "metric": specs[t].unit, "baseline": _fmt(specs[t], mean_R[j, j]),
            "final": _fmt(specs[t], mean_R[-1, j]),
            "drop %": f"undefined (baseline 0 on {undefined} of {len(drops)} seeds)" if undefined
            else fmt_mean_std(drops[:, j], 1, 1),
            f"drop ≤ {threshold:g}%": "-" if undefined else "pass" if mean_drop <= threshold else "FAIL",
        })
    lines = [d.table(f"forgetting_R_{name}", r_table), d.table(f"forgetting_{name}", task_table)]
    metrics = dict.fromkeys(specs[t].primary for t in tasks)  # BWT and averages only within one unit
    lines.append("\n".join(_totals(Rs, tasks, higher, specs, m) for m in metrics))
    lines.append(f"n = {len(Rs)} seeds; pass/fail uses the mean drop over seeds.")
    return "\n\n".join(lines)


def _totals(Rs: np.ndarray, tasks: list[str], higher: list[bool], specs: dict[str, TaskSpec], metric: str) -> str:
    """BWT and average final score over the tasks whose primary metric is `metric` (same units)."""
    cols = [j for j, t in enumerate(tasks) if specs[t].primary == metric]
    spec = specs[tasks[cols[0]]]
    scale, digits = spec.display
    return (f"- {spec.unit}, tasks {', '.join(tasks[j] for j in cols)}: "
            f"BWT {fmt_mean_std([bwt(R, higher, cols) for R in Rs], scale, digits)}, "
            f"average final {fmt_mean_std([average_final(R, cols) for R in Rs], scale, digits)}")


def _fmt(spec: TaskSpec, value: float) -> str:
    scale, digits = spec.display
    return f"{value * scale:.{digits}f}"
