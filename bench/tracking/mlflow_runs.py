"""MLflow: one parent run per suite run, one child run per cell, through MlflowClient and explicit run ids.

No fluent API (no active run, no global tracking URI): any process holding the parent run id can
add child runs, which is what a worker pool or SLURM jobs need (see `Tracker.state`).
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import Any

from bench.tracking.base import Tracker, TrackingError, as_text, final_metrics, flatten, numeric


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two or more letters: C:\ stays a path


def mlflow_uri(target: str) -> tuple[str, Path | None]:
    """(tracking URI, artifact root for new experiments) for a URI or a plain folder.

    A folder becomes `sqlite:///<folder>/mlflow.db` with artifacts in `<folder>/artifacts/<suite>/`: MLflow 3
    defaults to sqlite and refuses its file store unless MLFLOW_ALLOW_FILE_STORE=true. A sqlite URI
    keeps its artifacts beside the database (MLflow's own default is ./mlruns of whatever the current
    folder is); other URIs leave the artifact location to the server or store.
    """
    if not _SCHEME.match(target):
        folder = Path(target).expanduser().resolve()
        return f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"
    if target.startswith("sqlite:///") and target != "sqlite:///:memory:":
        db = Path(target[len("sqlite:///"):]).expanduser().resolve()
        return f"sqlite:///{db}", db.parent / "artifacts"
    return target, None


class MlflowTracker(Tracker):
    """One parent run per suite (`bench run` invocation), one child run per cell, in experiment <suite>."""

    label = "mlflow"

    def __init__(self, target: str, *, where: str = "tracking.mlflow"):
        self.where = where
        self.uri, self.artifact_root = mlflow_uri(target)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client = None
        self._runs: dict[str, str] = {}  # cell -> run id, for cells started in this process
        self._steps: dict[str, int] = {}  # cell -> history rows logged so far (the metric step)

    @classmethod
    def resume(cls, state: dict) -> MlflowTracker:
        t = cls(state["uri"], where="tracking state")
        t.artifact_root = Path(state["artifact_root"]) if state.get("artifact_root") else None
        t.experiment_id, t.parent_run_id = state["experiment_id"], state["parent_run_id"]
        return t

    def state(self) -> dict:
        return {"uri": self.uri, "artifact_root": self.artifact_root and str(self.artifact_root),
                "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id}

    @property
    def enabled(self) -> bool:
        return True

    def check(self) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise TrackingError(f"{self.where}: MLflow tracking needs the mlflow-skinny (or mlflow) package: "
                                "pip install 'mtl-bench[mlflow]'")
        if self.uri.startswith("sqlite:") and not all(importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic")):
            raise TrackingError(f"{self.where}: the MLflow store {self.uri} is a sqlite database, which needs "
                                "sqlalchemy and alembic: pip install 'mtl-bench[mlflow]' (or the full mlflow package)")
        if self.uri.startswith(("http://", "https://")):
            self._ping()
        try:
            self.client.search_experiments(max_results=1)
        except Exception as err:
            raise TrackingError(f"{self.where}: cannot use the MLflow store {self.uri}: {type(err).__name__}: {err}") from None

    def _ping(self) -> None:
        """Fail fast on a server that is down: MLflow's own client retries for minutes first."""
        import requests  # a dependency of mlflow-skinny

        try:
            requests.get(self.uri.rstrip("/") + "/health", timeout=10)
        except requests.RequestException as err:
            raise TrackingError(f"{self.where}: MLflow server {self.uri} is unreachable: {err}") from None

    @property
    def client(self):
        if self._client is None:
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as err:
                raise TrackingError(f"{self.where}: MLflow tracking needs the mlflow-skinny (or mlflow) package: "
                                    f"pip install 'mtl-bench[mlflow]' ({err})") from None
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def start_suite(self, suite_name: str, description: str, manifest: dict) -> None:
        self.experiment_id = self._experiment(suite_name)
        run = self.client.create_run(self.experiment_id, run_name=suite_name, tags=_tags(
            {"suite": suite_name, "mlflow.note.content": description}))
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, flatten(manifest))
        self.client.log_dict(self.parent_run_id, manifest, "manifest.json")

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            where = (self.artifact_root / name).as_uri() if self.artifact_root else None
            return self.client.create_experiment(name, artifact_location=where)
        except Exception:  # another process created it in between
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_cell(self, cell_name: str, resolved_config: dict, tags: dict) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        run = self.client.create_run(self.experiment_id, run_name=cell_name, tags=_tags(
            {**tags, "cell": cell_name, MLFLOW_PARENT_RUN_ID: self.parent_run_id}))
        self._runs[cell_name], self._steps[cell_name] = run.info.run_id, 0
        self._log_params(run.info.run_id, flatten(resolved_config))

    def log_epoch(self, cell_name: str, row: dict) -> None:
        self._steps[cell_name] = step = self._steps.get(cell_name, 0) + 1  # 1-based row of history.csv
        self._log_metrics(self._run_id(cell_name), numeric(row), step)

    def end_cell(self, cell_name: str, record: dict, files: list[Path]) -> None:
        run_id = self._run_id(cell_name)
        self._log_metrics(run_id, final_metrics(record), self._steps.get(cell_name, 0))
        status = str(record.get("status", "unknown"))
        self.client.set_tag(run_id, "status", status)
        if record.get("reason"):
            self.client.set_tag(run_id, "reason", _clip(str(record["reason"]), _limits()["tag"]))
        for path in files:
            if Path(path).is_file():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED" if status == "done" else "FAILED")
        self._runs.pop(cell_name, None)

    def end_suite(self, report_path: Path | None, figure_paths: list[Path]) -> None:
        for run_id in self._runs.values():  # cells begun here and never ended (a crash between hooks)
            self.client.set_terminated(run_id, "KILLED")
        if report_path is not None and Path(report_path).is_file():
            self.client.log_artifact(self.parent_run_id, str(report_path), "report")
        for fig in figure_paths:  # under report/<folder>/ so the report's relative links still resolve
            self.client.log_artifact(self.parent_run_id, str(fig), f"report/{Path(fig).parent.name}")
        self.client.set_terminated(self.parent_run_id, "FINISHED")

    def _run_id(self, cell_name: str) -> str:
        """The cell's child run: started here, or found under the parent run (started by another process)."""
        if cell_name not in self._runs:
            runs = self.client.search_runs(
                [self.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.cell = '{cell_name}'")
            if not runs:
                raise KeyError(f"no MLflow run for cell {cell_name!r} under parent run {self.parent_run_id}")
            self._runs[cell_name] = runs[0].info.run_id
        return self._runs[cell_name]

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        lim, seen, batch = _limits(), set(), []
        for key, value in params.items():
            key = _key(key, lim["key"])
            while key in seen:  # two config keys that sanitise alike must not clash (params are write-once)
                key += "_"
            seen.add(key)
            batch.append(Param(key, _clip(as_text(value), lim["param"])))
        for i in range(0, len(batch), lim["params_per_batch"]):
            self.client.log_batch(run_id, params=batch[i:i + lim["params_per_batch"]])

    def _log_metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        lim, now = _limits(), int(time.time() * 1000)
        batch = [Metric(_key(k, lim["key"]), v, now, step) for k, v in values.items()]
        for i in range(0, len(batch), lim["metrics_per_batch"]):
            self.client.log_batch(run_id, metrics=batch[i:i + lim["metrics_per_batch"]])


def _limits() -> dict[str, int]:
    """MLflow's size limits, from the installed version (they grew over releases)."""
    from mlflow.utils import validation as v

    return {"key": getattr(v, "MAX_ENTITY_KEY_LENGTH", 250), "param": getattr(v, "MAX_PARAM_VAL_LENGTH", 500),
            "tag": getattr(v, "MAX_TAG_VAL_LENGTH", 5000),
            "params_per_batch": getattr(v, "MAX_PARAMS_TAGS_PER_BATCH", 100),
            "metrics_per_batch": getattr(v, "MAX_METRICS_PER_BATCH", 1000)}


def _key(name: str, limit: int) -> str:
    # MLflow keys allow letters, digits, _ - . / and space; cell names in `members.` keys have ( = + ,
    return re.sub(r"[^\w.\-/ ]", "_", str(name))[:limit]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _tags(tags: dict) -> dict[str, str]:
    lim = _limits()
    return {_key(k, lim["key"]): _clip(str(v), lim["tag"]) for k, v in tags.items() if v is not None}
