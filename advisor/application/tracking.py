"""MLflow tracking of plans and comparisons: one parent run per plan (or modality comparison), one nested run per
search trial.

The store is the workspace's own SQLite database (``WORKSPACE/mlflow/mlflow.db``, artifacts next to it) unless
``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` names another one (an MLflow server, PostgreSQL, ...). Every call
goes through an explicit :class:`mlflow.MlflowClient`, never MLflow's global "active run", so two trackers in one
process do not interfere. MLflow is imported lazily: ``import mlflow`` takes about a second and the CLI must start
instantly.

Robustness, because plans run for minutes and get interrupted:

* a run ends FINISHED, FAILED (exception) or KILLED (Ctrl-C); runs left RUNNING by a process that died on this host
  are marked FAILED the next time a run starts (see :meth:`Tracker.fail_stale_runs`);
* a fresh SQLite store is created (migrations, experiment) under a file lock, because several processes doing it at
  once race, and writes retry briefly on "database is locked";
* an unreachable server, an unsupported URI or an unwritable store is one line of :class:`AdvisorError` within a few
  seconds, before anything is logged.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from advisor.application.workspace import Workspace, writable_dir_problem
from advisor.errors import AdvisorError
from simulator.text import error_line

if TYPE_CHECKING:
    from mlflow.entities import Param, Run
    from mlflow.tracking import MlflowClient

    from advisor.application.documents import Document
    from advisor.application.search import TrialResult

SHORT_ID_MIN = 6
"""The fewest hex characters of a run id that ``runs show`` and ``report`` take as a prefix."""
SHORT_ID = re.compile(rf"[0-9a-f]{{{SHORT_ID_MIN},31}}")
"""A run-id prefix (a full MLflow run id has 32 hex characters)."""

DEFAULT_EXPERIMENT = "lr-advisor"
"""Experiment that holds every plan and comparison unless another name is given."""

KINDS = ("plan", "compare", "identify")
"""Kinds of parent run, stored in the tag ``advisor.kind``."""

PLAN_RUN_TAG = "advisor.plan_run"
"""The tag of an identify run naming the plan whose protocol and classifier it used."""

SUMMARY_ARTIFACT = "summary.json"
"""Artifact holding a parent run's full result document, returned as :attr:`RunSummary.summary`."""

LONG_PARAMS_ARTIFACT = "long_params.json"
"""Artifact holding the full values of parameters too long for MLflow (their param is truncated)."""

TRIAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
"""Statuses a trial's nested run may end with."""

_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_HTTP_SCHEMES = ("http", "https")
_ALLOWED = "sqlite:///PATH, postgresql://..., mysql://..., mssql://..., http(s)://HOST:PORT"
_HEALTH_TIMEOUT_S = 3.0
_MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LENGTH = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_LOCK_RETRIES = 8

# MLflow settings (environment variables, read at each call) that keep it quiet and quick to fail. Only defaults:
# a value the user has set wins.
_MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # default 7 retries with backoff: minutes of hanging on a dead server
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # default 120 s
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # library code never prints; run_url() gives the link
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no tqdm bars on stderr when reading summary.json
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # no INFO lines ("Creating initial MLflow database tables...")
}

T = TypeVar("T")


def _import_mlflow() -> Any:
    """Import MLflow (slow) with this module's settings; every MLflow use goes through here."""
    for name, value in _MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import mlflow

    return mlflow


# --------------------------------------------------------------------------------------------- the store
def resolve_tracking_uri(workspace: Workspace, uri: str | None = None) -> str:
    """Return the tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the workspace's SQLite store.

    Nothing is created here; the workspace's ``mlflow/`` directory appears when a run is first logged.

    Args:
        workspace: the workspace whose ``mlflow/`` directory holds the default store.
        uri: an explicit tracking URI (``--tracking-uri``); empty or None to fall through.

    Returns:
        The URI; the default is ``sqlite:///<workspace>/mlflow/mlflow.db`` with an absolute path.
    """
    explicit = (uri or "").strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return explicit or f"sqlite:///{workspace.mlflow / 'mlflow.db'}"


def _scheme(uri: str) -> str:
    """The URI's scheme without its SQLAlchemy driver (``postgresql+psycopg`` → ``postgresql``)."""
    return urllib.parse.urlsplit(uri).scheme.split("+", 1)[0].lower()


def _sqlite_path(uri: str) -> Path:
    """The absolute database path of a ``sqlite:///PATH`` URI (relative paths from the current directory)."""
    return Path(os.path.abspath(urllib.parse.unquote(uri[len("sqlite:///") :])))


def _file_store_allowed() -> bool:
    return os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1")


def _unreachable(uri: str, reason: str) -> AdvisorError:
    return AdvisorError(
        f"tracking server {uri} is unreachable: {reason}; start it with `mlflow server --backend-store-uri "
        f"sqlite:///mlflow.db --host HOST --port PORT` or pass --tracking-uri"
    )


def _retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store call, retrying briefly while another process holds the SQLite write lock."""
    for attempt in range(_LOCK_RETRIES - 1):
        try:
            return call(*args, **kwargs)
        except Exception as e:
            if "database is locked" not in str(e):
                raise
            time.sleep(0.05 * 2**attempt)
    return call(*args, **kwargs)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing) for the duration of the block."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create_wal_database(path: Path) -> None:
    """Create an empty SQLite database in write-ahead-log mode (persistent), before MLflow adds its tables.

    WAL makes each commit one append to the log instead of a rollback journal plus a database write: logging a
    trial (six commits) took 18 ms instead of 77 ms here. (WAL needs a local file system, like SQLite itself.)
    """
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL").fetchall()
    finally:
        connection.close()


def _text(value: Any) -> str:
    """A param or tag value as text: strings as they are, containers as JSON, anything else through ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _params(params: Mapping[str, Any]) -> tuple[list[Param], dict[str, str]]:
    """MLflow params, values over MLflow's length limit truncated, and the full values of the truncated ones."""
    from mlflow.entities import Param

    marker = f"... [truncated; full value in {LONG_PARAMS_ARTIFACT}]"
    out, long_values = [], {}
    for key, value in params.items():
        text = _text(value)
        if len(text) > _MAX_PARAM_LENGTH:
            long_values[key] = text
            text = text[: _MAX_PARAM_LENGTH - len(marker)] + marker
        out.append(Param(key, text))
    return out, long_values


def _tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(value)[:_MAX_TAG_LENGTH] for key, value in tags.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


# --------------------------------------------------------------------------------------------- moved stores
ARTIFACTS_DIR = "artifacts"
"""A SQLite store keeps its experiments' artifacts in this folder next to the database."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Set on the experiment so that MLflow's UI opens it on its runs, not on the GenAI overview (traces, tokens)."""


def _artifact_root(location: str) -> Path | None:
    """The local folder of a ``file://`` artifact location (None for any other scheme: S3, a server, ...)."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def relocate_sqlite_store(db: Path) -> list[str]:
    """Point a moved or copied SQLite store's artifact locations at the folder next to the database.

    MLflow stores each experiment's artifact location and each run's artifact URI as absolute ``file://`` URIs,
    so a workspace copied to a lab server would go on writing artifacts into (and reading them from) the old
    one. Every experiment whose location is ``<somewhere>/artifacts`` other than ``<db folder>/artifacts`` is
    rewritten, with its runs' and logged models' URIs, in one transaction; locations of another kind (another
    scheme, a folder of another name) are the user's choice and are left alone.

    Args:
        db: the SQLite database (``mlflow.db``), which exists.

    Returns:
        The names of the experiments that were moved (empty when the store is where it was made).

    Raises:
        AdvisorError: one line: the file is not a readable SQLite database; or it was copied without its
            artifacts folder (the old one still exists, the new one does not).
    """
    import sqlite3

    uri = f"sqlite:///{db}"
    here = db.parent / ARTIFACTS_DIR
    moved: list[str] = []
    try:
        connection = sqlite3.connect(db, timeout=10)
    except sqlite3.Error as e:
        raise AdvisorError(f"tracking store {uri} cannot be read: {e}; move it away or pass --tracking-uri") from None
    try:
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "experiments" not in tables:
                return moved  # a fresh database, before MLflow made its tables
            rows = connection.execute(
                "SELECT experiment_id, name, artifact_location FROM experiments WHERE lifecycle_stage = 'active'"
            ).fetchall()
            moves = [(experiment_id, name, location.rstrip("/"), root) for experiment_id, name, location in rows
                     if (root := _artifact_root(location or "")) is not None and root.name == ARTIFACTS_DIR
                     and root != here]
            runs = connection.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
            if moves and runs and not here.is_dir() and any(root.is_dir() for *_, root in moves):
                raise AdvisorError(f"tracking store {uri} holds {runs} runs but their artifacts folder {here} is "
                                   "missing; copy the whole mlflow/ folder with the database, or pass --tracking-uri")
            new = here.as_uri()
            with connection:  # one transaction
                for experiment_id, name, old, _ in moves:
                    connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                                       (new, experiment_id))
                    for table, column in (("runs", "artifact_uri"), ("logged_models", "artifact_location")):
                        if table in tables:
                            connection.execute(
                                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                f"WHERE experiment_id = ? AND ({column} = ? OR substr({column}, 1, ?) = ?)",
                                (new, len(old) + 1, experiment_id, old, len(old) + 1, old + "/"))
                    moved.append(name)
        except sqlite3.DatabaseError as e:
            raise AdvisorError(f"tracking store {uri} cannot be read: {e}; move it away or pass --tracking-uri"
                               ) from None
    finally:
        connection.close()
    return moved


# --------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSummary:
    """A parent run (plan or comparison) as read back from the store.

    Attributes:
        run_id: MLflow's run id.
        kind: ``plan`` or ``compare`` (the ``advisor.kind`` tag).
        name: the run name.
        status: ``RUNNING``, ``FINISHED``, ``FAILED`` or ``KILLED``.
        start_time: when the run started (UTC).
        end_time: when it ended (UTC); None while running.
        params: the logged parameters (long ones truncated; see ``long_params.json``).
        metrics: the latest value of each metric.
        tags: the run's tags, MLflow's own (``mlflow.*``) left out.
        summary: the ``summary.json`` artifact as a dict; only loaded by :meth:`Tracker.get_run` (None in
            listings, and when the run has no such artifact).
    """

    run_id: str
    kind: str
    name: str
    status: str
    start_time: datetime
    end_time: datetime | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    summary: Document | None = None


def _summary(run: Run, summary: Document | None = None) -> RunSummary:
    info, data = run.info, run.data
    return RunSummary(
        run_id=info.run_id,
        kind=data.tags.get("advisor.kind", ""),
        name=info.run_name or "",
        status=info.status,
        start_time=datetime.fromtimestamp(info.start_time / 1000, tz=UTC),
        end_time=None if info.end_time is None else datetime.fromtimestamp(info.end_time / 1000, tz=UTC),
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags={key: value for key, value in data.tags.items() if not key.startswith("mlflow.")},
        summary=summary,
    )


class ParentRun:
    """An open parent run; logs to it and creates its nested trial runs. Made by :meth:`Tracker.start_run`."""

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self.run_id = run_id
        self._long_params: dict[str, str] = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; values longer than MLflow's limit are truncated, in full in ``long_params.json``."""
        batch, long_values = _params(params)
        _retry_locked(self._client.log_batch, self.run_id, params=batch)
        if long_values:
            self._long_params.update(long_values)
            self.log_dict(self._long_params, LONG_PARAMS_ARTIFACT)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metric values (as floats) at ``step``."""
        from mlflow.entities import Metric

        now = _now_ms()
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        _retry_locked(self._client.log_batch, self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as text, cut to MLflow's length limit)."""
        from mlflow.entities import RunTag

        batch = [RunTag(key, value) for key, value in _tags(tags).items()]
        _retry_locked(self._client.log_batch, self.run_id, tags=batch)

    def log_dict(self, obj: dict[str, Any], path: str) -> None:
        """Store ``obj`` as a JSON (``.json``) or YAML (``.yaml``) artifact at ``path``."""
        self._client.log_dict(self.run_id, obj, path)

    def log_text(self, text: str, path: str) -> None:
        """Store ``text`` as an artifact at ``path`` (e.g. ``report.md``)."""
        self._client.log_text(self.run_id, text, path)

    def log_figure(self, fig: Any, path: str) -> None:
        """Store a matplotlib figure as an image artifact at ``path`` (format from the suffix, e.g. ``.png``)."""
        self._client.log_figure(self.run_id, fig, path)

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts, under the directory ``artifact_path`` if given."""
        self._client.log_artifact(self.run_id, os.fspath(local_path), artifact_path)

    def logged_trials(self) -> set[int]:
        """The numbers of the trials already logged as nested runs of this run (for a reopened run, so that a
        resumed study logs each of its trials once, also one a killed process finished but never logged)."""
        runs = self._client.search_runs([self._experiment_id], filter_string=f"tags.mlflow.parentRunId = "
                                        f"'{self.run_id}'", max_results=50_000)
        return {int(r.data.tags["advisor.trial"]) for r in runs if r.data.tags.get("advisor.trial", "").isdigit()}

    def log_trial(
        self,
        number: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, Any] | None = None,
        *,
        status: str = "FINISHED",
    ) -> str:
        """Record one finished search trial as a nested run named ``trial-<number>``.

        Three store calls per trial (create, one batch of params, metrics and tags, terminate): about 10 ms on
        the local SQLite store.

        Args:
            number: the trial number (tag ``advisor.trial``).
            params: the trial's parameters (the protocol).
            metrics: its results (cost, accuracy, ...); logged at step 0.
            tags: extra tags (e.g. the Optuna state, constraint values).
            status: the run status: ``FINISHED`` (default), ``FAILED`` (the trial failed) or ``KILLED``.

        Returns:
            The nested run's id.

        Raises:
            AdvisorError: ``status`` is not one of the allowed ones.
        """
        from mlflow.entities import Metric

        if status not in TRIAL_STATUSES:
            raise AdvisorError(f"trial status {status!r} is not allowed; allowed: {', '.join(TRIAL_STATUSES)}")
        now = _now_ms()
        run_tags = {**_tags(tags or {}), "mlflow.parentRunId": self.run_id, "advisor.trial": str(number)}
        run = _retry_locked(
            self._client.create_run, self._experiment_id, start_time=now, tags=run_tags, run_name=f"trial-{number}"
        )
        run_id = run.info.run_id
        batch, long_values = _params(params)
        _retry_locked(
            self._client.log_batch,
            run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
            params=batch,
        )
        if long_values:
            self._client.log_dict(run_id, long_values, LONG_PARAMS_ARTIFACT)
        _retry_locked(self._client.set_terminated, run_id, status, end_time=_now_ms())
        return run_id


# ------------------------------------------------------------------------------------ what a plan logs
def trial_params(result: TrialResult) -> dict[str, Any]:
    """A search trial's protocol as the MLflow params of its nested run."""
    return {"observable": result.observable, "n_units": result.n_units, "layers": ",".join(result.layers),
            "n_sessions": result.n_sessions, "window": f"{result.window[0]:g}-{result.window[1]:g}",
            "repeats": result.repeats, "noise": round(result.noise, 6), "noise_model": result.noise_model}


def trial_metrics(result: TrialResult) -> dict[str, float]:
    """A search trial's results as the MLflow metrics of its nested run."""
    return {"accuracy": result.accuracy, "ci_low": result.ci[0], "ci_high": result.ci[1], "cost": result.cost,
            "balanced_accuracy": result.balanced_accuracy, "feasible": float(result.feasible)}


RECOMMENDATION_TAG = "advisor.recommendation"
"""Tag holding a plan's recommended protocol as compact JSON, so that listings need not read summary.json."""
RECOMMENDATION_KEYS = ("observable", "n_units", "layers", "n_sessions", "window", "repeats", "noise_model", "noise",
                       "chronic", "cost", "cost_unit", "accuracy", "ci", "description", "n_animals", "animal_cost")
"""What of the recommendation the tag keeps (the protocol, its cost and search accuracy; well under MLflow's
tag length limit)."""


def recommendation_tag(doc: Document) -> str | None:
    """The value of :data:`RECOMMENDATION_TAG` for a plan document: its recommendation's protocol, cost and
    accuracy as JSON, or None when nothing is recommended (and for comparisons)."""
    rec = doc.get("recommendation")
    if not rec:
        return None
    return json.dumps({k: rec[k] for k in RECOMMENDATION_KEYS if k in rec}, separators=(",", ":"))


def plan_metrics(doc: Document) -> dict[str, float]:
    from advisor.application.documents import headline_trial

    """The plan's headline numbers as MLflow metrics: search and set-aside estimates, controls, cost."""
    rec = headline_trial(doc)
    final = doc["setaside"]
    out = {"feasible": float(doc["feasible"]), "accuracy": final["accuracy"], "ci_low": final["ci"][0],
           "ci_high": final["ci"][1], "search_accuracy": rec["accuracy"], "search_ci_low": rec["ci"][0],
           "search_ci_high": rec["ci"][1], "cost": rec["cost"], "elapsed_s": doc["elapsed_s"],
           "n_animals": float(rec.get("n_animals") or 1)}
    out["setaside_accuracy"], out["setaside_ci_low"] = final["accuracy"], final["ci"][0]
    check = doc.get("verification")
    if check and check.get("accuracy") is not None:
        out["recheck_accuracy"] = check["accuracy"]
        if check.get("ci"):
            out["recheck_ci_low"] = check["ci"][0]
    held = doc.get("heldout_architecture")
    if held and held.get("accuracy") is not None:
        out["heldout_accuracy"], out["heldout_ci_low"] = held["accuracy"], held["ci"][0]
    for name, entry in doc["controls"].items():
        out[f"control_{name}_accuracy"] = entry["accuracy"]
        out[f"control_{name}_ci_high"] = entry["ci"][1]
    return out


def plan_run_name(doc_question: Mapping[str, Any]) -> str:
    """A plan run's name, saying the question: ``plan: activations ≤ 500 units, target 0.75``."""
    observables = list(doc_question.get("observables") or ["any observable"])
    what = observables[0] if len(observables) == 1 else ", ".join(observables[:-1]) + " or " + observables[-1]
    modality = doc_question.get("modality")
    where = f" ({modality})" if modality and modality != "generic" else ""
    target = f"target {float(doc_question['target_accuracy']):.2f}"
    extra = ", robust" if doc_question.get("robust") else ""
    return f"plan: {what}{where} ≤ {doc_question['max_units']} units, {target}{extra}"


def identify_metrics(doc: Document) -> dict[str, float]:
    """An identification's headline numbers as MLflow metrics: the top probability and its interval, the
    misspecification p-value, the classifier's calibration on set-aside networks, and each rule's probability."""
    cal = doc["calibration"]
    out = {"p_top": doc["p_top"], "p_top_ci_low": doc["p_top_ci"][0], "p_top_ci_high": doc["p_top_ci"][1],
           "misspecification_p": doc["misspecification_p"], "in_distribution": float(doc["in_distribution"]),
           "false_alarm_rate": doc["misspecification"]["false_alarm_rate"], "calibration_ece": cal["ece"],
           "calibration_accuracy": cal["accuracy"], "temperature": cal["temperature"]}
    out.update({f"posterior_{rule}": p for rule, p in doc["posterior"].items()})
    return out


def identify_run_name(doc: Document) -> str:
    """An identify run's name: ``identify: mouse7.nwb → fa (p 0.81)``, or ``... → unlike the simulations``."""
    from pathlib import Path

    sources = [Path(s.strip()).name for s in doc["recording"]["source"].split(",")]
    what = sources[0] + (f" and {len(sources) - 1} more" if len(sources) > 1 else "")
    verdict = (f"{doc['top_rule']} (p {doc['p_top']:.2f})" if doc["in_distribution"]
               else "unlike the simulations")
    return f"identify: {what} → {verdict}"


def compare_run_name(modalities: list[str], target_accuracy: float) -> str:
    """A comparison run's name: ``compare: ephys_tetrode, two_photon, ... target 0.75``."""
    shown = ", ".join(modalities[:4]) + (f" and {len(modalities) - 4} more" if len(modalities) > 4 else "")
    return f"compare: {shown}, target {target_accuracy:.2f}"


# --------------------------------------------------------------------------------------------- the tracker
class Tracker:
    """Logs plans and comparisons to an MLflow store and reads them back.

    Construction is cheap (no MLflow import, no I/O); the store is opened, created if needed and checked on
    first use.

    Args:
        workspace: the workspace (its ``mlflow/`` directory holds the default store).
        uri: the tracking URI (``--tracking-uri``); None for ``$MLFLOW_TRACKING_URI`` or the default store.
        experiment: the MLflow experiment, created on first use.
    """

    def __init__(self, workspace: Workspace, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.workspace = workspace
        self.uri = resolve_tracking_uri(workspace, uri)
        self.experiment = experiment
        self._checked = False
        self.relocated: list[str] = []
        """The experiments whose artifact root was moved into this store's folder when it was opened."""
        self._client_: MlflowClient | None = None
        self._experiment_id_: str | None = None

    # ---- the store
    def check(self) -> None:
        """Check, quickly and without creating anything, that the store can be used (once per tracker).

        Raises:
            AdvisorError: one line: the URI's scheme is not supported; the server does not answer
                ``/health`` within a few seconds; or a SQLite store's directory cannot be written.
        """
        if self._checked:
            return
        scheme = _scheme(self.uri)
        if scheme in _HTTP_SCHEMES:
            url = self.uri.rstrip("/") + "/health"
            try:
                with urllib.request.urlopen(url, timeout=_HEALTH_TIMEOUT_S) as response:
                    response.read()
            except urllib.error.HTTPError as e:
                raise _unreachable(self.uri, f"GET /health answered HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError):
                    reason = f"no answer within {_HEALTH_TIMEOUT_S:g} s"
                raise _unreachable(self.uri, str(reason)) from None
        elif scheme == "sqlite":
            if not self.uri.startswith("sqlite:///"):
                raise AdvisorError(f"tracking URI {self.uri!r} is not supported: a SQLite store needs sqlite:///PATH")
            problem = writable_dir_problem(_sqlite_path(self.uri).parent)
            if problem:
                raise AdvisorError(
                    f"tracking store {self.uri} is not writable: {problem}; pass --tracking-uri with another store"
                )
            if _sqlite_path(self.uri).exists():
                with self._store_lock():
                    self.relocated = relocate_sqlite_store(_sqlite_path(self.uri))
        elif scheme not in _DB_SCHEMES and not (scheme in ("file", "") and _file_store_allowed()):
            raise AdvisorError(
                f"tracking URI {self.uri!r} is not supported; allowed: {_ALLOWED} "
                f"(file stores only with MLFLOW_ALLOW_FILE_STORE=true)"
            )
        self._checked = True

    def _artifact_location(self) -> str | None:
        """Where a new experiment's artifacts go: next to a SQLite database, in the workspace for other databases,
        and wherever the server decides for a server."""
        scheme = _scheme(self.uri)
        if scheme in _HTTP_SCHEMES:
            return None
        directory = _sqlite_path(self.uri).parent if scheme == "sqlite" else self.workspace.mlflow
        return (directory / "artifacts").as_uri()

    def _store_lock(self) -> AbstractContextManager[None]:
        """A lock over creating a SQLite store (migrations race between processes); none for other stores."""
        if _scheme(self.uri) != "sqlite":
            return nullcontext()
        db = _sqlite_path(self.uri)
        return _file_lock(db.with_name(db.name + ".lock"))

    def _store_exists(self) -> bool:
        """False for a SQLite store whose database was never created (reading it must not create it)."""
        self.check()
        return _scheme(self.uri) != "sqlite" or _sqlite_path(self.uri).exists()

    def _experiment_exists(self) -> bool:
        """Whether the store and the experiment exist (reading must not create them)."""
        if self._experiment_id_ is not None:
            return True
        return self._store_exists() and self._client.get_experiment_by_name(self.experiment) is not None

    @property
    def _client(self) -> MlflowClient:
        """The MLflow client, opening (and, for SQLite, creating) the store on first use."""
        if self._client_ is None:
            self.check()
            mlflow = _import_mlflow()
            if _scheme(self.uri) == "sqlite":
                _sqlite_path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            with self._store_lock():
                try:
                    if _scheme(self.uri) == "sqlite" and not _sqlite_path(self.uri).exists():
                        _create_wal_database(_sqlite_path(self.uri))
                    self._client_ = _retry_locked(mlflow.MlflowClient, tracking_uri=self.uri)
                except Exception as e:
                    raise AdvisorError(f"tracking store {self.uri} cannot be opened: {error_line(e)}") from None
        return self._client_

    def _experiment_id(self) -> str:
        """The experiment's id, creating the experiment (with its artifact location) on first use."""
        if self._experiment_id_ is None:
            client = self._client
            with self._store_lock():
                experiment = client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    from mlflow.exceptions import MlflowException

                    try:
                        _retry_locked(
                            client.create_experiment, self.experiment, artifact_location=self._artifact_location(),
                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                        )
                    except MlflowException as e:  # another machine created it meanwhile (server, PostgreSQL)
                        if e.error_code != "RESOURCE_ALREADY_EXISTS":
                            raise
                    experiment = client.get_experiment_by_name(self.experiment)
                    assert experiment is not None  # created just above
            if experiment.lifecycle_stage == "deleted":
                raise AdvisorError(
                    f"experiment {self.experiment!r} is deleted in {self.uri}; restore it with `mlflow experiments "
                    f"restore --experiment-id {experiment.experiment_id}` or use another experiment name"
                )
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before the tag, or by hand
                _retry_locked(client.set_experiment_tag, experiment.experiment_id, EXPERIMENT_KIND_TAG,
                              EXPERIMENT_KIND)
            self._experiment_id_ = experiment.experiment_id
        return self._experiment_id_

    # ---- writing
    def resumable_run(self, kind: str, study: str, params: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """Whether a plan (or comparison) of ``study`` was run before, and how to record it this time.

        Running the same command again resumes its Optuna study; it should not add a duplicate MLflow run and
        report folder each time. The newest earlier run of the study is reused when it has ended (or its process
        died) and was logged with the same parameters (MLflow parameters cannot change); when the parameters
        differ (another ``--trials``, say) a new run is made and marked as resumed from it.

        Returns:
            ``(run id to reopen, None)``, ``(None, run id it resumes from)``, or ``(None, None)`` for a first run
            and while the earlier run is still going (another process: this one joins its study).
        """
        if kind not in KINDS:
            raise AdvisorError(f"run kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        if "'" in study or not self._experiment_exists():
            return None, None
        self.fail_stale_runs()
        found = self._client.search_runs(
            [self._experiment_id()], filter_string=f"tags.`advisor.kind` = '{kind}' and params.study = '{study}'",
            max_results=1, order_by=["attributes.start_time DESC"])
        if not found or found[0].info.status == "RUNNING":
            return None, None
        run = found[0]
        logged = {p.key: p.value for p in _params(params)[0]}
        if logged == dict(run.data.params):
            return run.info.run_id, None
        return None, run.info.run_id

    @contextmanager
    def start_run(
        self, kind: str, name: str, params: Mapping[str, Any], tags: Mapping[str, Any] | None = None,
        *, reopen: str | None = None,
    ) -> Iterator[ParentRun]:
        """Open a parent run for a plan or a comparison; use as ``with tracker.start_run(...) as run:``.

        Stale runs of dead processes on this host are marked FAILED first. The run ends FINISHED when the block
        completes, KILLED on KeyboardInterrupt and FAILED on any other exception, which propagates.

        Args:
            kind: ``plan`` or ``compare`` (tag ``advisor.kind``).
            name: the run name shown in ``advisor runs list`` and the MLflow UI.
            params: parameters logged at the start (see :meth:`ParentRun.log_params`).
            tags: extra tags; ``advisor.pid`` and ``advisor.host`` are added.
            reopen: the id of an ended run of the same study to log into again (from :meth:`resumable_run`): its
                status goes back to RUNNING, its tag ``advisor.resumes`` counts the reopenings, and its params,
                equal to ``params``, are not logged again.

        Yields:
            The open :class:`ParentRun`.

        Raises:
            AdvisorError: an unknown ``kind``, or the store cannot be used (see :meth:`check`).
        """
        if kind not in KINDS:
            raise AdvisorError(f"run kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        experiment_id = self._experiment_id()
        self.fail_stale_runs()
        run_tags = {
            **_tags(tags or {}),
            "advisor.kind": kind,
            "advisor.pid": str(os.getpid()),
            "advisor.host": socket.gethostname(),
        }
        if reopen is not None:
            previous = self._run(reopen)
            run_tags["advisor.resumes"] = str(int(previous.data.tags.get("advisor.resumes", "0")) + 1)
            _retry_locked(self._client.update_run, reopen, status="RUNNING", name=name)
            parent = ParentRun(self._client, experiment_id, reopen)
            parent.set_tags(run_tags)
        else:
            run = _retry_locked(self._client.create_run, experiment_id, tags=run_tags, run_name=name)
            parent = ParentRun(self._client, experiment_id, run.info.run_id)
        try:
            if params and reopen is None:
                parent.log_params(params)
            yield parent
        except KeyboardInterrupt:
            _retry_locked(self._client.set_terminated, parent.run_id, "KILLED")
            raise
        except BaseException:
            _retry_locked(self._client.set_terminated, parent.run_id, "FAILED")
            raise
        _retry_locked(self._client.set_terminated, parent.run_id, "FINISHED")

    def attach(self, run_id: str) -> ParentRun:
        """The parent run ``run_id`` (another process's plan), for a worker that adds its trials to it.

        Raises:
            AdvisorError: ``run_id`` is unknown (one line).
        """
        self.get_run(run_id)
        return ParentRun(self._client, self._experiment_id(), run_id)

    def fail_stale_runs(self) -> list[str]:
        """Mark FAILED the runs of this experiment left RUNNING by a process of this host that no longer exists.

        A run records the process (tags ``advisor.pid``, ``advisor.host``) that opened it; a process killed
        without cleanup (SIGKILL, power loss) leaves it RUNNING forever otherwise. Runs of other hosts are left
        alone: their processes cannot be checked from here.

        Returns:
            The ids of the runs marked FAILED.
        """
        host = socket.gethostname()
        stale = self._client.search_runs(
            [self._experiment_id()],
            filter_string=f"attributes.status = 'RUNNING' and tags.`advisor.host` = '{host}'",
            max_results=1000,
        )
        failed = []
        for run in stale:
            pid = run.data.tags.get("advisor.pid", "")
            if pid.isdigit() and not _process_alive(int(pid)):
                _retry_locked(
                    self._client.set_tag, run.info.run_id, "advisor.stale", f"process {pid} on {host} ended first"
                )
                _retry_locked(self._client.set_terminated, run.info.run_id, "FAILED")
                failed.append(run.info.run_id)
        return failed

    # ---- reading
    def list_runs(self, kind: str | None = None, max_results: int = 50) -> list[RunSummary]:
        """The parent runs (plans, comparisons) of the experiment, newest first, without their summaries.

        Args:
            kind: only runs of this kind (``plan`` or ``compare``); None for both.
            max_results: at most this many runs.

        Raises:
            AdvisorError: an unknown ``kind`` or a ``max_results`` below 1; the store cannot be used.
        """
        if kind is not None and kind not in KINDS:
            raise AdvisorError(f"run kind {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        if max_results < 1:
            raise AdvisorError(f"max_results must be at least 1; got {max_results}")
        if not self._experiment_exists():
            return []
        condition = "IS NOT NULL" if kind is None else f"= '{kind}'"
        runs = self._client.search_runs(
            [self._experiment_id()],
            filter_string=f"tags.`advisor.kind` {condition}",
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
        return [_summary(run) for run in runs]

    def resolve_run_id(self, run_id: str) -> str:
        """The full id of a plan or comparison given by a unique prefix of at least
        :data:`SHORT_ID_MIN` hex characters (as git takes commits); a full id is returned as it is.

        Raises:
            AdvisorError: no run has the prefix (``unknown run id ...``), or several do (``... is ambiguous``).
        """
        if not SHORT_ID.fullmatch(run_id) or not self._store_exists() or not self._experiment_exists():
            return run_id
        matches = sorted({r.run_id for r in self.list_runs(max_results=50_000) if r.run_id.startswith(run_id)})
        if len(matches) > 1:
            shown = ", ".join(m[: len(run_id) + 4] for m in matches[:4]) + (", ..." if len(matches) > 4 else "")
            raise AdvisorError(f"run id {run_id!r} is ambiguous: {len(matches)} runs start with it ({shown}); "
                               "give more characters")
        if not matches:
            raise AdvisorError(f"unknown run id {run_id!r}; list runs with `advisor runs list`")
        return matches[0]

    def _run(self, run_id: str) -> Run:
        """The MLflow run ``run_id`` (or a unique prefix of it); unknown and malformed ids are one-line errors."""
        if not self._store_exists():
            raise AdvisorError(f"unknown run id {run_id!r}; list runs with `advisor runs list`")
        client = self._client  # imports MLflow with this module's settings
        from mlflow.exceptions import MlflowException

        full = self.resolve_run_id(run_id)
        try:
            return client.get_run(full)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            raise AdvisorError(f"unknown run id {run_id!r}; list runs with `advisor runs list`") from None

    def get_run(self, run_id: str) -> RunSummary:
        """One run with its ``summary.json`` document (None when the run has none).

        Raises:
            AdvisorError: ``unknown run id '<id>'; list runs with `advisor runs list``` for unknown or malformed
                ids.
        """
        run = self._run(run_id)
        run_id = run.info.run_id
        summary = None
        if any(item.path == SUMMARY_ARTIFACT for item in self._client.list_artifacts(run_id)):
            with tempfile.TemporaryDirectory(prefix="advisor-summary-") as tmp:
                local = self._client.download_artifacts(run_id, SUMMARY_ARTIFACT, tmp)
                summary = json.loads(Path(local).read_text())
        return _summary(run, summary)

    def download_artifact(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Copy the artifact ``path`` (a file or directory) of run ``run_id`` into the directory ``dst``.

        Returns:
            The local path of the copy.

        Raises:
            AdvisorError: an unknown run id, or the run has no artifact ``path`` (the message lists those it has).
        """
        run_id = self._run(run_id).info.run_id
        parent = str(Path(path).parent) if Path(path).parent != Path(".") else None
        present = [item.path for item in self._client.list_artifacts(run_id, parent)]
        if path.strip("/") not in present:
            have = ", ".join(present) or "none"
            raise AdvisorError(f"run {run_id} has no artifact {path!r}; it has: {have}")
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(self._client.download_artifacts(run_id, path.strip("/"), os.fspath(dst)))

    def run_url(self, run_id: str) -> str:
        """Where to look at a run: its URL on a server, else the command that opens the MLflow UI on the store.

        Raises:
            AdvisorError: an unknown run id.
        """
        run = self._run(run_id)
        fragment = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        if _scheme(self.uri) in _HTTP_SCHEMES:
            return f"{self.uri.rstrip('/')}/{fragment}"
        return f"mlflow ui --backend-store-uri {shlex.quote(self.uri)}, then open http://127.0.0.1:5000/{fragment}"
