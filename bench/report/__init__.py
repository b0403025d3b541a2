"""The reporter: reads only the results store and writes `reports/<suite>.md` plus figures.

`write_report` gathers the store once (`ReportData`, bench/report/data.py), then joins the
sections in `bench/report/sections.py:SECTIONS`, each a function `(ReportData) -> str` that may
save figures and its tables as CSV under `reports/<suite>/`. A new section is one function added
to that list. Beside the report it writes the tidy `results/<suite>/results.csv` (bench/report/tidy.py),
the one file a report writes into the store. Nothing here expands a suite or builds a strategy,
so a report rebuilds from any results folder, even after its suite file changed or went away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.record import Manifest
from bench.report.data import ReportData, gather, now, task_rows  # noqa: F401  (the package's interface)
from bench.store import atomic_write_text


def write_report(results: Path, suite: str, reports: Path, *, current_keys: dict[str, str] | None = None,
                 manifest: Manifest | None = None, run_seconds: float | None = None, command: str = "",
                 on_note: Callable[[str], None] | None = None) -> Path:
    """Write reports/<suite>.md (figures and tables as CSV in reports/<suite>/) and
    results/<suite>/results.csv from results/<suite>/; return the report's path.

    current_keys: cell -> key of the suite's grid now, when its file exists; without it staleness is
    judged from the code alone. manifest: used when the store has none (stores from before manifests);
    without either, one is rebuilt from the records. A results.csv that cannot be written (a read-only
    store) is a note at the report's end and a line to `on_note`, not an error.
    """
    from bench.report.sections import SECTIONS
    from bench.report.tidy import RESULTS_CSV, write_results_csv

    data = gather(results, suite, reports, current_keys=current_keys, manifest=manifest, run_seconds=run_seconds,
                  command=command)
    text = "\n\n".join(s for s in (section(data) for section in SECTIONS) if s) + "\n"
    if data.records:
        try:
            write_results_csv(data)
        except OSError as err:  # a read-only store still gets its report
            note = f"{data.store.dir / RESULTS_CSV}: not written ({err.strerror or err}); the report is"
            text += f"\n> Note: {note} complete without it.\n"
            if on_note is not None:
                on_note(f"{note} written all the same")
    path = reports / f"{suite}.md"
    atomic_write_text(path, text)
    return path
