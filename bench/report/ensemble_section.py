"""The report's ensembles: each ensemble against its members, per task, on the primary metric (from
the ensemble cell's record, which holds its members' metrics and the gains; bench/combine.py)."""

from __future__ import annotations

from bench.kinds import TaskSpec
from bench.record import Record
from bench.report import figures
from bench.report.data import ReportData
from bench.report.stats import fmt_mean_std


def ensembles(d: ReportData) -> str:
    table, figs = [], []
    for ds in d.datasets():
        specs, panels = d.specs(ds), {}
        records = [r for s in d.strategies(ds) for r in d.cells(ds, s) if r.members and "members" in r.extra]
        for r in records:
            label = r.cell.split("__")[1]  # e.g. ensemble(of=hard_share,seeds=0+1)
            for t, spec in specs.items():
                if t in r.test:
                    table.append(_gain_row(ds, label, t, spec, r))
                    scale = spec.display[0]
                    members = [v * scale for v in _member_values(r, t, spec.primary)]
                    panels.setdefault(t, {})[label] = (members, r.test[t][spec.primary] * scale)
        if panels:
            path = figures.ensemble_members(d.fig_dir / f"ensemble_{ds}.png", f"{ds}: ensemble vs its members (test)",
                                            panels, {t: s.unit for t, s in specs.items()})
            figs.append(f"![ensemble {ds}]({d.figure_link(path)})")
    if not table:
        return ""
    return ("## Ensembles\n\nEach ensemble averages its members' stored test predictions (class "
            "probabilities or regression outputs), with no retraining. Gain = ensemble - member on the "
            "primary metric (accuracy in points; for MAE a negative gain is an improvement); mean member "
            "is mean ± std over the members (n), best member is the best single member.\n\n"
            + d.table("ensembles", table)
            + "\n\nIn the figure (grey dots: members; red bar: the ensemble; no error bars), look for the "
            "ensemble marker beyond every member dot (above them for accuracy, below for MAE): that is a gain "
            "over the best single seed, not only over the average one.\n\n" + "\n\n".join(figs))


def _gain_row(ds: str, label: str, task: str, spec: TaskSpec, r: Record) -> dict:
    metric, (scale, digits) = spec.primary, spec.display
    members = _member_values(r, task, metric)
    best = max(members) if spec.higher_is_better else min(members)
    return {"dataset": ds, "ensemble": label, "task": task, "metric": metric,
            "ensemble value": f"{r.test[task][metric] * scale:.{digits}f}",
            "mean member": fmt_mean_std(members, scale, digits) + f" (n={len(members)})",
            "best member": f"{best * scale:.{digits}f}",
            "gain vs mean": f"{r.extra['gain_vs_mean'][task][metric] * scale:+.{digits}f}",
            "gain vs best": f"{r.extra['gain_vs_best'][task][metric] * scale:+.{digits}f}"}


def _member_values(r: Record, task: str, metric: str) -> list[float]:
    """An ensemble record's member metrics for one task (STL members each predict one task)."""
    return [m[task][metric] for m in r.extra["members"].values() if task in m]
