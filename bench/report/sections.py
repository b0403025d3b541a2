"""The report's sections, in order: the one place a section is registered.

Each section is a function `(ReportData) -> str` (Markdown; "" to skip) in a module of its role;
it may save figures, and its tables as CSV through `ReportData.table`, under `reports/<suite>/`.
Adding one is a module with the function, and its name in SECTIONS below.
"""

from __future__ import annotations

from bench.report.comparison_section import against_stl
from bench.report.curves_section import training_curves
from bench.report.data import ReportData  # noqa: F401  (what a section receives)
from bench.report.dense_section import dense_tasks
from bench.report.diagnostic_sections import (confusion_matrices, hardest_examples, per_class_accuracy,
                                              residual_diagnostics)
from bench.report.ensemble_section import ensembles
from bench.report.forgetting_section import forgetting
from bench.report.protocol import numerics, reference_comparison
from bench.report.results_sections import (appendix, classification_details, failures, header, reproduce,
                                           stale_cells, summary_tables)
from bench.report.weighting_section import weighting

SECTIONS = [header, summary_tables, against_stl, reference_comparison, numerics, ensembles, classification_details,
            confusion_matrices, per_class_accuracy, residual_diagnostics, hardest_examples, dense_tasks,
            training_curves, forgetting, weighting, failures, stale_cells, appendix, reproduce]
