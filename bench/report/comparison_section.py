"""The report's section "Against single-task learning": every comparison of bench/report/comparison.py
as one table (also as CSV), and per dataset a figure of the differences with their intervals."""

from __future__ import annotations

import math

from bench.report import figures
from bench.report.comparison import ALPHA, BOOTSTRAP_REPLICATES, DELTA_M, Comparison, comparisons
from bench.report.data import ReportData
from bench.report.stats import fmt_interval, fmt_p

INTRO = (
    "Each multi-task row against its matched single-task reference (see Results) on each task's primary "
    "test metric, and on delta_m. **Seed level:** the row's seed s is paired with the reference's seed s; "
    "`difference` is the mean over the `n` seeds that pair, with its 95% t-interval (Student t, n - 1 "
    "degrees of freedom), in points for accuracy and in the metric's units for MAE; `%` is the same relative "
    "to the reference's mean; `p` is the two-sided paired t-test (for delta_m, the one-sample t-test of the "
    "per-seed values against 0). **Image level** (classification): the accuracy difference with a "
    "bootstrap that resamples seeds and test images together (Owen 2007; {replicates:,} replicates, percentile "
    "interval, so p is at least {p_floor:.4f}), which carries the test set's sampling error as well as the seed-to-seed spread; with few "
    "seeds it is narrower than the t-interval, so read it beside the seed-level test, not instead of it. "
    "**Multiple comparisons:** `p Holm` is Holm's step-down adjustment over all {m} seed-level p-values of "
    "this report, `image p Holm` over its {k} image-level ones. **Verdict:** win or loss when the Holm-adjusted "
    "seed-level p is below {alpha} (for MAE a decrease is a win), else tie, which means no evidence of a "
    "difference, not evidence of equality; n/a without a seed-level test (fewer than two paired seeds, or an "
    "ensemble, which is one seed-less cell compared with the reference's mean and the reference's seeds).")


def against_stl(d: ReportData) -> str:
    found = comparisons(d)
    if not found:
        return ""
    m = sum(not math.isnan(c.p) for c in found)
    k = sum(not math.isnan(c.image_p) for c in found)
    intro = INTRO.format(m=m, k=k, alpha=ALPHA, replicates=BOOTSTRAP_REPLICATES, p_floor=2 / (BOOTSTRAP_REPLICATES + 1))
    parts = ["## Against single-task learning", intro,
             d.table("vs_stl", [_row(c) for c in found])]
    for ds in dict.fromkeys(c.dataset for c in found):
        path = _figure(d, ds, [c for c in found if c.dataset == ds])
        parts.append(f"![differences {ds}]({d.figure_link(path)})")
    return "\n\n".join(parts)


def _row(c: Comparison) -> dict[str, str]:
    unit = "points" if c.scale == 100 else ("%" if c.task == DELTA_M else c.metric.upper())
    return {
        "dataset": c.dataset, "strategy": c.strategy, "task": c.task, "reference": c.reference,
        "metric": c.metric, "n": str(c.n) + ("" if c.paired else " (unpaired)"),
        "difference [95% CI]": fmt_interval(c.mean, c.low, c.high, c.scale, c.digits) + f" {unit}",
        "difference %": "" if c.task == DELTA_M else fmt_interval(c.percent, c.percent_low, c.percent_high, 1, 2),
        "p": fmt_p(c.p), "p Holm": fmt_p(c.p_holm),
        "image-level difference [95% CI]": ("" if math.isnan(c.image_mean)
                                            else fmt_interval(c.image_mean, c.image_low, c.image_high, 100, 2)),
        "image p": fmt_p(c.image_p), "image p Holm": fmt_p(c.image_p_holm), "verdict": c.verdict,
    }


def _figure(d: ReportData, ds: str, found: list[Comparison]):
    panels: dict[str, list[figures.Difference]] = {}
    for c in found:
        if c.task == DELTA_M:
            title = "delta_m %\n(higher is better)"
        else:
            direction = "higher" if c.higher_is_better else "lower"
            unit = "points" if c.scale == 100 else "value"
            title = f"{c.task}: {c.metric}, {unit}\n({direction} is better)"
        panels.setdefault(title, []).append(figures.Difference(
            label=c.strategy, mean=c.mean * c.scale, low=c.low * c.scale, high=c.high * c.scale, paired=c.paired))
    return figures.differences(
        d.fig_dir / f"vs_stl_{ds}.png",
        f"{ds}: difference from the matched single-task reference\n(bars: 95% t-interval over paired seeds; "
        "diamond: ensemble vs the reference's mean, no interval)", panels)
