"""Every multi-task row against its matched single-task reference: differences, intervals, tests.

Per dataset, strategy and task (the task's primary test metric), and for delta_m over the row's
tasks, one `Comparison`:
- seed level: the row's seed s is paired with the reference's seed s (`stats.pair_by_seed`); the
  mean difference, its 95% t-interval and the paired t-test p over the n seeds that pair
  (`stats.paired_difference`; for delta_m, `stats.delta_m_interval` and the t-test against 0);
- image level, for classification: accuracy difference with a bootstrap over seeds and test
  images (`prediction_stats.bootstrap_difference`) and its p-value;
- Holm's correction over all the report's seed-level p-values (one family), and separately over
  its image-level p-values; a row wins or loses against the reference only when its Holm-adjusted
  seed-level p is below ALPHA (`stats.win_tie_loss`), else it ties.
A combined row (an ensemble: one seed-less cell) is not seed-paired: its difference is against the
mean reference over the reference's seeds, without a seed-level test (verdict n/a); its image-level
bootstrap resamples the reference's seeds and the test images against the one ensemble.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from bench.kinds import TaskSpec
from bench.record import Record
from bench.report.data import ReportData
from bench.report.prediction_stats import bootstrap_difference
from bench.report.references import Match, matches
from bench.report.stats import delta_m, delta_m_interval, holm, pair_by_seed, paired_difference, ttest_p, win_tie_loss

ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests
# Image-level bootstrap replicates: percentile intervals need ~1,000 or more (Efron and Tibshirani 1993,
# ch. 13); the smallest p is 2 / 2,001 ~ 0.001, so Holm can still reach ALPHA over ~50 tests. 10,000
# would cost a report about half a second more on 2 cores (a multinomial draw per replicate).
BOOTSTRAP_REPLICATES = 2000
DELTA_M = "delta_m"  # the `task` of a row's delta_m comparison
NAN = math.nan


@dataclass(frozen=True)
class Comparison:
    """One row (strategy) against its reference on one task, or on delta_m (task == DELTA_M).

    Differences are row - reference in the metric's units (a fraction for accuracy, the value for
    MAE, percent for delta_m); `scale` and `digits` say how tables show them (x100: points).
    """

    dataset: str
    strategy: str
    task: str
    reference: str  # the reference entry id (delta_m: the ids, joined by " + ")
    metric: str  # the primary metric, or "delta_m %"
    higher_is_better: bool
    scale: float
    digits: int
    paired: bool  # seed-paired (False: a combined row against the mean reference)
    n: int  # seeds that pair (unpaired: the reference's seeds)
    mean: float = NAN  # mean difference
    low: float = NAN  # 95% t-interval of the mean difference
    high: float = NAN
    percent: float = NAN  # the difference and its interval in % of the reference mean
    percent_low: float = NAN
    percent_high: float = NAN
    p: float = NAN  # two-sided paired t-test (delta_m: one-sample t-test against 0)
    image_mean: float = NAN  # accuracy difference over test images (classification), bootstrap
    image_low: float = NAN
    image_high: float = NAN
    image_p: float = NAN
    p_holm: float = NAN
    image_p_holm: float = NAN
    verdict: str = "n/a"  # win | tie | loss from p_holm; n/a without a seed-level test


def comparisons(d: ReportData) -> list[Comparison]:
    """Every comparison of the report, Holm-corrected over the report (cached per report)."""
    return d.cached("comparisons", lambda: _corrected([c for ds in d.datasets() for c in _dataset(d, ds)]))


def _dataset(d: ReportData, dataset: str) -> list[Comparison]:
    specs, out = d.specs(dataset), []
    for sid, m in matches(d, dataset).items():
        out += [_task(d, dataset, m, t, ref, specs[t]) for t, ref in m.references.items() if t in specs]
        if m.complete:
            out.append(_delta_m(d, dataset, m, specs))
    return out


def _per_seed(records: list[Record], task: str, metric: str) -> dict[int | None, float]:
    return {r.seed: float(r.test[task][metric]) for r in records if task in r.test}


def _task(d: ReportData, dataset: str, m: Match, task: str, ref: str, spec: TaskSpec) -> Comparison:
    rows, refs = d.cells(dataset, m.strategy, task), d.cells(dataset, ref, task)
    values, reference = _per_seed(rows, task, spec.primary), _per_seed(refs, task, spec.primary)
    base = Comparison(dataset=dataset, strategy=m.strategy, task=task, reference=ref, metric=spec.primary,
                      higher_is_better=spec.higher_is_better, scale=spec.display[0], digits=spec.display[1],
                      paired=m.paired, n=0)
    if m.paired:
        seeds, a, b = pair_by_seed(values, reference)
        if not seeds:
            return base
        diff = paired_difference(a, b)
        base = replace(base, n=diff.n, mean=diff.mean, low=diff.low, high=diff.high, percent=diff.percent,
                       percent_low=diff.percent_low, percent_high=diff.percent_high, p=diff.p)
        pairs = [(_cell(rows, s), _cell(refs, s)) for s in seeds]
    else:
        ref_values = [v for v in reference.values() if not math.isnan(v)]
        if not ref_values or not values:
            return base
        value, ref_mean = next(iter(values.values())), float(np.mean(ref_values))
        diff = value - ref_mean
        base = replace(base, n=len(ref_values), mean=diff, percent=100 * diff / abs(ref_mean) if ref_mean else NAN)
        pairs = [(rows[0].cell, r.cell) for r in refs]  # the one combined cell against every reference seed
    if "confusion" in spec.panels:  # classification: per-image correctness is argmax == target
        base = _image_level(d, base, pairs, task)
    return base


def _cell(records: list[Record], seed: int) -> str:
    return next(r.cell for r in records if r.seed == seed)


def _image_level(d: ReportData, c: Comparison, pairs: list[tuple[str, str]], task: str) -> Comparison:
    """The bootstrap over seeds and test images of (row cell, reference cell) pairs; unchanged when
    the cells were tested on different targets (then no image-level test applies)."""
    correct_a, correct_b, targets = [], [], None
    for a, b in pairs:
        (pa, ta), (pb, tb) = d.arrays(a, task), d.arrays(b, task)
        targets = ta if targets is None else targets
        if not (np.array_equal(ta, tb) and np.array_equal(ta, targets)):
            return c
        correct_a.append(pa.argmax(1) == ta)
        correct_b.append(pb.argmax(1) == tb)
    boot = bootstrap_difference(np.stack(correct_a), np.stack(correct_b), n_boot=BOOTSTRAP_REPLICATES)
    return replace(c, image_mean=boot.mean, image_low=boot.low, image_high=boot.high, image_p=boot.p)


def _delta_m(d: ReportData, dataset: str, m: Match, specs: dict[str, TaskSpec]) -> Comparison:
    """delta_m % per seed against the same seed's references (a combined row: against their means)."""
    tasks = list(m.references)
    higher = {t: specs[t].higher_is_better for t in tasks}
    row = {t: _per_seed(d.cells(dataset, m.strategy, t), t, specs[t].primary) for t in tasks}
    ref = {t: _per_seed(d.cells(dataset, s, t), t, specs[t].primary) for t, s in m.references.items()}
    base = Comparison(dataset=dataset, strategy=m.strategy, task=DELTA_M,
                      reference=" + ".join(dict.fromkeys(m.references.values())), metric="delta_m %",
                      higher_is_better=True, scale=1.0, digits=2, paired=m.paired, n=0)
    if not m.paired:
        means = {t: float(np.nanmean(list(v.values()))) for t, v in ref.items()}
        value = delta_m({t: next(iter(v.values())) for t, v in row.items()}, means, higher)
        return replace(base, n=min(len(v) for v in ref.values()), mean=value)
    seeds = sorted(set.intersection(*(set(row[t]) & set(ref[t]) for t in tasks)))
    values = [delta_m({t: row[t][s] for t in tasks}, {t: ref[t][s] for t in tasks}, higher) for s in seeds]
    mean, low, high, n = delta_m_interval(values)
    return replace(base, n=n, mean=mean, low=low, high=high, p=ttest_p(values))


def _corrected(found: list[Comparison]) -> list[Comparison]:
    """Holm over the seed-level p-values of the report, and apart over its image-level ones."""
    p_holm = holm([c.p for c in found]) if found else []
    image_holm = holm([c.image_p for c in found]) if found else []
    out = []
    for c, p, ip in zip(found, p_holm, image_holm):
        verdict = win_tie_loss(c.mean, float(p), c.higher_is_better, ALPHA) if c.paired else "n/a"
        out.append(replace(c, p_holm=float(p), image_p_holm=float(ip), verdict=verdict))
    return out


def row_comparisons(d: ReportData, dataset: str, strategy: str) -> dict[str, Comparison]:
    """task (or DELTA_M) -> comparison, for one row."""
    return {c.task: c for c in comparisons(d) if c.dataset == dataset and c.strategy == strategy}
