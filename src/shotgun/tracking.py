"""MLflow: one run per model, grouped in one experiment per library version.

The embedded default is a SQLite store in the results folder; ``init_store`` creates (and migrates)
it once before parallel shard jobs start, because concurrent schema creation races. Runs carry the
model card and the safetensors weights as artifacts; ``mlflow.pytorch.log_model`` is not used (it
pickles). A run is keyed by the model id (tag ``shotgun.model_id``): logging a model that already
has a finished run returns that run instead of adding a duplicate, and a run of the same model
left unfinished by a killed process is deleted, so each model has exactly one run. A run is named
``dataset/property/descriptor/index``, spans the model's real training time and holds its
per-epoch losses as step metrics.

Each ``shotgun transfer`` given a store is one run in the experiment ``shotgun-transfer``
(:func:`log_transfer`), logged after its files are written. A library model's run can also hold
it as an MLflow pyfunc model, logged on demand (:func:`log_pyfunc`).

A SQLite store records absolute artifact locations; ``open_store`` rebinds the store of a results
folder that was moved or copied to the folder's own ``mlartifacts/`` (:func:`rebind`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ShotgunError

if TYPE_CHECKING:
    from .library import Library
    from .library.card import ModelCard
    from .nn import History

MODEL_TAG = "shotgun.model_id"
FAILURE_TAG = "shotgun.failure"
# MLflow 3's UI opens an experiment of this kind on its runs (classic ML), not on GenAI traces.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
EXPERIMENT_PREFIX = "shotgun-"
TRANSFER_EXPERIMENT = f"{EXPERIMENT_PREFIX}transfer"
PYFUNC = "model"  # a library model's pyfunc model in its run: runs:/<run id>/model
ARTIFACTS = "mlartifacts"  # the artifact folder of a results folder's store
MAX_BATCH = 1000  # MLflow's limit of metrics, and of entities, per log_batch call


class TrackingError(ShotgunError):
    """A tracking store that is missing, holds no such library version, or lost artifacts."""


def resolve_uri(uri: str | None, results: Path) -> str:
    """The tracking URI: ``uri`` as given, or the embedded SQLite store under ``results``.
    A URI with a password is refused: URIs land in configs, command lines and logs, and MLflow
    reads a server's credentials from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."""
    if uri:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(uri)
        if parts.password is not None:
            scheme, netloc, *rest = parts
            shown = urlunsplit((scheme, netloc.rpartition("@")[2], *rest))
            raise ShotgunError(
                f"tracking URI {shown}: remove the credentials from it and set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead (a URI is written "
                "to configs and logs)"
            )
        return uri
    return f"sqlite:///{(Path(results) / 'mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _require_store(uri: str) -> None:
    """Refuse a SQLite store that does not exist (MLflow would create an empty one)."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise TrackingError(
            f"{path}: no MLflow store here (give the results folder that holds mlflow.db with "
            "--results, or --tracking-uri; `shotgun init-tracking` creates one)"
        )


def open_store(uri: str | None, results: Path, create: bool = False) -> str:
    """The tracking URI of a command: ``uri`` as given, else the SQLite store of the results
    folder ``results``. A store that does not exist is refused unless ``create``. The store of a
    results folder that was moved or copied is rebound to the folder's own artifacts first."""
    uri = resolve_uri(uri, results)
    path = sqlite_path(uri)
    if not create:
        _require_store(uri)
    if path is not None and path == (Path(results) / "mlflow.db").resolve() and path.is_file():
        rebind(uri, Path(results) / ARTIFACTS)
    return uri


def rebind(uri: str, artifact_root: Path) -> list[str]:
    """Point shotgun's experiments of a SQLite store, and their runs, at ``artifact_root``.

    A SQLite store records absolute artifact locations: a copied or moved results folder would
    read artifacts from, and write new ones into, its old place. Each experiment whose location
    is another local folder is moved to ``artifact_root`` (the locations of its runs and logged
    models keep their path below it). Returns the names of the experiments rebound; a store
    already in place is not written to."""
    path = sqlite_path(uri)
    if path is None:
        raise TrackingError(f"{uri}: only a SQLite store can be rebound")
    new = Path(artifact_root).resolve().as_uri()
    rebound = []
    # Idempotent, in one transaction: the jobs of a moved folder may all rebind it at once.
    with closing(sqlite3.connect(path, timeout=30)) as con, con:
        rows = con.execute(
            "SELECT experiment_id, name, artifact_location FROM experiments "
            "WHERE substr(name, 1, ?) = ?",
            (len(EXPERIMENT_PREFIX), EXPERIMENT_PREFIX),
        ).fetchall()
        for eid, name, old in rows:
            if old == new or not old.startswith("file:"):
                continue
            con.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                (new, len(old) + 1, eid, len(old), old),
            )
            con.execute(
                "UPDATE logged_models SET artifact_location = ? || substr(artifact_location, ?) "
                "WHERE experiment_id = ? AND substr(artifact_location, 1, ?) = ?",
                (new, len(old) + 1, eid, len(old), old),
            )
            con.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, eid)
            )
            rebound.append(name)
    return rebound


# Logging a model first looks its id up among the runs' tags (Tracker.log_run): without an index
# of the tags by value, each lookup scans every run's tags, and logging slows as the store grows.
TAG_INDEX = "CREATE INDEX IF NOT EXISTS shotgun_tags_key_value ON tags (key, value)"


def experiment_name(library_version: str) -> str:
    return f"{EXPERIMENT_PREFIX}library-{library_version}"


def _quiet():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _client(uri: str, create: bool = False):
    """An MlflowClient of ``uri``; a missing SQLite store is refused unless ``create``."""
    _quiet()
    if not create:
        _require_store(uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment(client, name: str, location: str | None) -> str:
    """The id of experiment ``name``, created (as classic ML, at ``location``) if missing; a
    concurrent creation by another process is taken as found."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=location, tags=dict([EXPERIMENT_KIND])
            )
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND[0] not in exp.tags:  # a store made before the tag; a kind set since
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)  # stays as chosen
    return exp.experiment_id


def _location(uri: str, artifact_root: Path | None) -> str | None:
    """A new experiment's artifact location: ``artifact_root`` for a local store (a SQLite
    store's default: ``mlartifacts/`` beside it); a tracking server stores (and proxies) its own."""
    if uri.startswith(("http://", "https://")):
        return None
    path = sqlite_path(uri)
    if artifact_root is None and path is not None:
        artifact_root = path.parent / ARTIFACTS
    return Path(artifact_root).resolve().as_uri() if artifact_root else None


def init_store(uri: str, library_version: str, artifact_root: Path | None = None) -> str:
    """Create the store, the version's experiment and the transfer experiment if missing (once,
    before parallel jobs use them); returns the version's experiment id. A SQLite store also
    gets an index of its tags by value (:data:`TAG_INDEX`)."""
    client = _client(uri, create=True)
    location = _location(uri, artifact_root)
    _experiment(client, TRANSFER_EXPERIMENT, location)
    experiment_id = _experiment(client, experiment_name(library_version), location)
    path = sqlite_path(uri)
    if path is not None:
        with closing(sqlite3.connect(path, timeout=30)) as con, con:
            con.execute(TAG_INDEX)
    return experiment_id


def run_name(card: ModelCard) -> str:
    """A model's run name: ``dataset/property/descriptor/index``."""
    return f"{card.dataset}/{card.property}/{card.descriptor['name']}/{card.index}"


def _batches(metrics: list, params: list):
    """(metrics, params) per log_batch call: at most MAX_BATCH metrics and entities each."""
    first = MAX_BATCH - len(params)
    yield metrics[:first], params
    for start in range(first, len(metrics), MAX_BATCH):
        yield metrics[start : start + MAX_BATCH], []


class Tracker:
    """Logs models of one library version to an initialised store."""

    def __init__(self, uri: str, library_version: str):
        self.client = _client(uri)
        exp = self.client.get_experiment_by_name(experiment_name(library_version))
        if exp is None:
            raise TrackingError(
                f"{uri}: no experiment for library {library_version}; "
                "run `shotgun init-tracking` first"
            )
        self.experiment_id = exp.experiment_id

    def find(self, model_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{MODEL_TAG}` = '{model_id}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def _claim(self, model_id: str) -> str | None:
        """The finished run of ``model_id``, if any, after deleting the runs of it that a killed
        process left unfinished (RUNNING, FAILED, KILLED): only one process trains a model, and
        its next run replaces them."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{MODEL_TAG}` = '{model_id}'",
            max_results=1000,
            order_by=["attributes.start_time ASC"],
        )
        for run in runs:
            if run.info.status != "FINISHED":
                self.client.delete_run(run.info.run_id)
        finished = [r.info.run_id for r in runs if r.info.status == "FINISHED"]
        return finished[0] if finished else None

    def log_run(self, card: ModelCard, weights: Path | None, history: History | None = None) -> str:
        """Log one model (card, metrics, weights); returns its run id. The run's ``card.json``
        carries that run id. A model that failed to train is logged as a FAILED run with its
        card and the reason (tag ``shotgun.failure``), without weights. With the model's
        training ``history`` (:class:`shotgun.nn.History`), the run spans its training time and
        holds its per-epoch ``train_loss`` and ``val_loss`` as step metrics (step: the epoch
        from 0, as ``best_epoch`` counts)."""
        from mlflow.entities import Metric, Param

        existing = self._claim(card.model_id)
        if existing:
            return existing
        now = int(time.time() * 1000)
        start, end = (history.start_ms, history.end_ms) if history else (now, None)
        tags = {
            MODEL_TAG: card.model_id,
            "material_class": card.material_class,
            "dataset": card.dataset,
            "property": card.property,
            "descriptor": card.descriptor["name"],
            "architecture": card.architecture_name,
        }
        if card.failure is not None:
            tags[FAILURE_TAG] = card.failure
        run = self.client.create_run(
            self.experiment_id, start_time=start, tags=tags, run_name=run_name(card)
        )
        rid = run.info.run_id
        cfg = card.train_config
        params = {
            "dataset": card.dataset,
            "property": card.property,
            "descriptor": card.descriptor["name"],
            "architecture": card.architecture_name,
            "seed": cfg["seed"],
            "index": card.index,
            "lr": cfg["optim"]["lr"],
            "batch_size": cfg["trainer"]["batch_size"],
            "n_train": card.n_train,
            "data_hash": card.data_hash[:16],
        }
        summary = {
            k: v for k, v in dataclasses.asdict(card.metrics).items() if isinstance(v, (int, float))
        }
        metrics = [Metric(k, float(v), end or now, 0) for k, v in summary.items()]
        if history is not None:
            for step, (train, val, t) in enumerate(
                zip(history.train_loss, history.val_loss, history.epoch_end_ms)
            ):
                metrics += [Metric("train_loss", train, t, step), Metric("val_loss", val, t, step)]
        for batch, batch_params in _batches(metrics, [Param(k, str(v)) for k, v in params.items()]):
            self.client.log_batch(rid, metrics=batch, params=batch_params)
        self.client.log_dict(rid, card.replace(mlflow_run_id=rid).to_dict(), "card.json")
        if weights is not None:
            self.client.log_artifact(rid, str(weights))
        self.client.set_terminated(
            rid, "FINISHED" if card.failure is None else "FAILED", end_time=end
        )
        return rid


def _version_experiment(client, uri: str, library_version: str, require: bool):
    """The experiment of a library version; None if the store lacks it, or with ``require``
    refused (naming the versions the store holds)."""
    exp = client.get_experiment_by_name(experiment_name(library_version))
    if exp is None and require:
        held = sorted(
            e.name.removeprefix(experiment_name(""))
            for e in client.search_experiments()
            if e.name.startswith(experiment_name(""))
        )
        raise TrackingError(
            f"{uri}: no library version {library_version!r} "
            f"(versions in this store: {', '.join(held) or 'none'})"
        )
    return exp


def finished_runs(
    uri: str, library_version: str, require: bool = False, span: tuple[int, int] | None = None
):
    """(client, run) for every finished run of a library version, page by page (those started
    in ``span``, [first, last) in ms, if given). With ``require``, a version the store does not
    hold is refused (naming those it holds)."""
    client = _client(uri)
    exp = _version_experiment(client, uri, library_version, require)
    if exp is None:
        return
    where = "attributes.status = 'FINISHED'"
    if span is not None:
        where += f" and attributes.start_time >= {span[0]} and attributes.start_time < {span[1]}"
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            where,
            max_results=1000,
            page_token=token,
        )
        for run in page:
            yield client, run
        token = page.token
        if not token:
            return


def start_spans(uri: str, library_version: str, n: int) -> list[tuple[int, int]]:
    """``n`` spans of start time, [first, last) in ms, that together hold every run of a
    library version (equal in time, not in runs); none for a version without runs. A version
    the store does not hold is refused (naming those it holds)."""
    client = _client(uri)
    exp = _version_experiment(client, uri, library_version, require=True)
    ends = [
        client.search_runs([exp.experiment_id], max_results=1, order_by=[order])
        for order in ("attributes.start_time ASC", "attributes.start_time DESC")
    ]
    if not ends[0]:
        return []
    first, last = ends[0][0].info.start_time, ends[1][0].info.start_time + 1
    cuts = [first + (last - first) * i // n for i in range(n)] + [last]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def count_runs(uri: str, library_version: str) -> int:
    """Finished runs of a library version."""
    return sum(1 for _ in finished_runs(uri, library_version))


# Transfer runs: the sections of summary.json whose numbers are metrics (their text and flags
# tags), named by their path in summary.json (``nested.selected.cv_mae``).
SUMMARY_SECTIONS = ("best", "baseline", "stack", "saved", "nested", "control")
SUMMARY_COUNTS = ("n_samples", "n_dropped", "n_candidates", "n_weak_excluded", "seconds")
TRANSFER_FILES = (
    "summary.json",
    "report.html",
    "report.md",
    "ranking.csv",
    "dropped.csv",
    "learning_curve.csv",
    "fine_tune.csv",
)
MAX_TAG = 5000  # MLflow's limit of a tag value is 8,000 characters


def summary_values(summary: Mapping) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of a transfer's summary.json: the numbers of its scored sections and its
    counts as metrics, their strings and flags as tags, each named by its path; lists left out."""
    metrics = {k: float(summary[k]) for k in SUMMARY_COUNTS if _number(summary.get(k))}
    tags = {}

    def walk(path: str, value) -> None:
        if isinstance(value, Mapping):
            for key, v in value.items():
                walk(f"{path}.{key}", v)
        elif _number(value):
            metrics[path] = float(value)
        elif isinstance(value, (str, bool)):
            tags[path] = str(value).lower() if isinstance(value, bool) else value[:MAX_TAG]

    for section in SUMMARY_SECTIONS:
        walk(section, summary.get(section))
    return metrics, tags


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def used_models(summary: Mapping, library: Library) -> dict[str, list[str]]:
    """The library models a transfer used, each with its roles: ``saved`` (a member of the saved
    winner), ``best`` (the best transfer pipeline), ``stack``, ``fine_tune``."""
    found: dict[str, list[str]] = {}

    def add(role: str, model_id) -> None:
        found.setdefault(str(model_id), []).append(role)

    for member in (summary.get("saved") or {}).get("members", []):
        add("saved", member.split(" ")[0])  # "<model id> d=<depth> <learner>", or a baseline
    add("best", summary["best"]["model_id"])
    for mid in (summary.get("stack") or {}).get("model_ids", []):
        add("stack", mid)
    for fine in summary.get("fine_tune") or []:
        add("fine_tune", fine["model_id"])
    known = set(library.index["model_id"])
    return {mid: roles for mid, roles in found.items() if mid in known}


def log_transfer(
    uri: str, out: Path, options: Mapping, library: Library, start_ms: int | None = None
) -> str:
    """Log the transfer written to ``out`` as one run of the experiment ``shotgun-transfer``;
    returns its id. Params: the run's ``options``; metrics and tags: :func:`summary_values`;
    tags ``shotgun.winner``, ``shotgun.library_version``, ``shotgun.model_ids`` and
    ``shotgun.model_runs`` (``model id=run id`` of each library model used whose card names its
    run); artifacts: the summary, report, tables, plots and ``library_models.json`` (each model
    used: its roles, cell and run). The run spans the transfer from ``start_ms``."""
    from mlflow.entities import Metric, Param

    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    client = _client(uri, create=True)  # a store named by the user is created if missing
    eid = _experiment(client, TRANSFER_EXPERIMENT, _location(uri, None))
    models = []
    for mid, roles in used_models(summary, library).items():
        card = library.card(mid)
        cell = {k: getattr(card, k) for k in ("dataset", "property", "material_class")}
        models.append(
            {
                "model_id": mid,
                "roles": roles,
                **cell,
                "descriptor": card.descriptor["name"],
                "mlflow_run_id": card.mlflow_run_id,
            }
        )
    metrics, values = summary_values(summary)
    target = summary["target"]
    tags = {
        "shotgun.winner": str(summary.get("winner")),
        "shotgun.library_version": summary["library_version"],
        "shotgun.library": str(library.root),
        "shotgun.target": f"{target['data']}:{target['target']}",
        "shotgun.kind": target["kind"],
        "shotgun.model_ids": ",".join(m["model_id"] for m in models)[:MAX_TAG],
        "shotgun.model_runs": ",".join(
            f"{m['model_id']}={m['mlflow_run_id']}" for m in models if m["mlflow_run_id"]
        )[:MAX_TAG],
        **{f"shotgun.{k}": v for k, v in values.items()},
        "mlflow.note.content": _description(client, summary, models, library.version),
    }
    now = int(time.time() * 1000)
    name = f"{Path(target['data']).stem}/{target['target']}"
    rid = client.create_run(eid, start_time=start_ms or now, tags=tags, run_name=name).info.run_id
    try:
        params = [Param(k, _param(v)) for k, v in options.items() if v is not None]
        series = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for batch, batch_params in _batches(series, params):
            client.log_batch(rid, metrics=batch, params=batch_params)
        for path in [out / f for f in TRANSFER_FILES] + sorted(out.glob("*.png")):
            if path.is_file():
                client.log_artifact(rid, str(path))
        client.log_dict(
            rid, {"library_version": library.version, "models": models}, "library_models.json"
        )
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    client.set_terminated(rid, "FINISHED")
    return rid


def _description(client, summary: Mapping, models: list[dict], version: str) -> str:
    """The run's description (markdown): the winner, its estimates and the library models used,
    each linked to its training run where this store holds the library version."""
    saved, nested = summary.get("saved") or {}, summary.get("nested") or {}
    lines = [
        f"Winner: **{summary.get('winner')}** ({saved.get('name')}), same-fold MAE "
        f"{saved.get('cv_mae', float('nan')):.4g}."
    ]
    if nested.get("selected"):
        lines.append(f"Nested MAE of the selected method: {nested['selected']['cv_mae']:.4g}.")
    exp = client.get_experiment_by_name(experiment_name(version))
    lines.append(f"\nLibrary {version} models used:\n")
    for m in models:
        cell = f"{m['dataset']}/{m['property']} ({m['descriptor']}): {', '.join(m['roles'])}"
        name, run = m["model_id"], m["mlflow_run_id"]
        if exp is not None and run:
            name = f"[{name}](#/experiments/{exp.experiment_id}/runs/{run})"
        lines.append(f"- {name} {cell}")
    return "\n".join(lines)[:MAX_TAG]


def _param(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def log_pyfunc(uri: str, card: ModelCard) -> str:
    """Log library model ``card`` as an MLflow pyfunc model named ``model`` in the model's own
    run (``runs:/<run id>/model``), by models-from-code (``shotgun/mlflow_model.py``): its
    artifacts are the run's card and weights, checked against ``card``. Returns the model URI; a
    model already logged is not logged again. The finished run is not resumed (its status and
    times stay those of training)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from . import __version__
    from .checksums import sha256

    rid = card.mlflow_run_id
    if not rid:
        raise TrackingError(f"model {card.model_id}: its card names no MLflow run")
    client = _client(uri)
    try:
        run = client.get_run(rid)
    except MlflowException:
        raise TrackingError(f"{uri}: no run {rid} (model {card.model_id})") from None
    if run.data.tags.get(MODEL_TAG) != card.model_id:
        raise TrackingError(f"{uri}: run {rid} is not model {card.model_id}'s")
    model_uri = f"runs:/{rid}/{PYFUNC}"
    logged = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{rid}' AND name = '{PYFUNC}'"
    )
    if logged:
        return model_uri
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "card": "card.json",
            "weights": f"{card.model_id}.safetensors",
        }
        try:
            files = {k: client.download_artifacts(rid, v, tmp) for k, v in files.items()}
        except (MlflowException, OSError) as err:
            raise TrackingError(f"{run.info.artifact_uri}: artifacts of run {rid}: {err}") from None
        if sha256(Path(files["weights"])) != card.weights_sha256:
            raise TrackingError(f"run {rid}: its weights are not model {card.model_id}'s")
        mlflow.set_tracking_uri(uri)  # where Model.log writes, and in which experiment
        mlflow.set_experiment(experiment_id=run.info.experiment_id)
        # Model.log is what mlflow.pyfunc.log_model calls; it takes the run to log into.
        Model.log(
            artifact_path=None,
            name=PYFUNC,
            flavor=mlflow.pyfunc,
            run_id=rid,
            python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts=files,
            pip_requirements=[f"shotgun=={__version__}", f"mlflow=={mlflow.__version__}"],
            tags={MODEL_TAG: card.model_id},
        )
    return model_uri
