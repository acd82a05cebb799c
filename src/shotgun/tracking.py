"""MLflow: one run per model, grouped in one experiment per library version.

The embedded default is a SQLite store in the results folder; ``init_store`` creates (and migrates)
it once before parallel shard jobs start, because concurrent schema creation races. Runs carry the
model card and the safetensors weights as artifacts; ``mlflow.pytorch.log_model`` is not used (it
pickles). A run is keyed by the model id (tag ``shotgun.model_id``): logging a model that already
has a finished run returns that run instead of adding a duplicate, and a run of the same model
left unfinished by a killed process is deleted, so each model has exactly one run.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ShotgunError

if TYPE_CHECKING:
    from .library.card import ModelCard

MODEL_TAG = "shotgun.model_id"
FAILURE_TAG = "shotgun.failure"


def resolve_uri(uri: str | None, results: Path) -> str:
    """The tracking URI: ``uri`` as given, or the embedded SQLite store under ``results``.
    A URI with a password is refused: URIs land in configs, command lines and logs, and MLflow
    reads a server's credentials from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."""
    if uri:
        from urllib.parse import urlsplit

        parts = urlsplit(uri)
        if parts.password is not None:
            shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            raise ShotgunError(
                f"tracking URI {shown}: remove the credentials from it and set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead (a URI is written "
                "to configs and logs)"
            )
        return uri
    return f"sqlite:///{(Path(results) / 'mlflow.db').resolve()}"


def experiment_name(library_version: str) -> str:
    return f"shotgun-library-{library_version}"


def _quiet():
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def init_store(uri: str, library_version: str, artifact_root: Path | None = None) -> str:
    """Create the store and the version's experiment if missing; returns the experiment id."""
    _quiet()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = experiment_name(library_version)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A local store keeps artifacts beside it; a tracking server stores (and proxies) its own.
    local = artifact_root and not uri.startswith(("http://", "https://"))
    location = Path(artifact_root).resolve().as_uri() if local else None
    return client.create_experiment(name, artifact_location=location)


class Tracker:
    """Logs models of one library version to an initialised store."""

    def __init__(self, uri: str, library_version: str):
        _quiet()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment_name(library_version))
        if exp is None:
            raise ShotgunError(
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

    def log_run(self, card: ModelCard, weights: Path | None) -> str:
        """Log one model (card, metrics, weights); returns its run id. The run's ``card.json``
        carries that run id. A model that failed to train is logged as a FAILED run with its
        card and the reason (tag ``shotgun.failure``), without weights."""
        from mlflow.entities import Metric, Param

        existing = self._claim(card.model_id)
        now = int(time.time() * 1000)
        if existing:
            return existing
        tags = {
            MODEL_TAG: card.model_id,
            "material_class": card.material_class,
            "dataset": card.dataset,
            "property": card.property,
            "descriptor": card.descriptor["name"],
            "architecture": card.architecture_name,
            "mlflow.runName": card.model_id,
        }
        if card.failure is not None:
            tags[FAILURE_TAG] = card.failure
        run = self.client.create_run(self.experiment_id, tags=tags)
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
        metrics = {
            k: v for k, v in dataclasses.asdict(card.metrics).items() if isinstance(v, (int, float))
        }
        self.client.log_batch(
            rid,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        self.client.log_dict(rid, card.replace(mlflow_run_id=rid).to_dict(), "card.json")
        if weights is not None:
            self.client.log_artifact(rid, str(weights))
        self.client.set_terminated(rid, "FINISHED" if card.failure is None else "FAILED")
        return rid


def finished_runs(uri: str, library_version: str):
    """(client, run) for every finished run of a library version, page by page."""
    _quiet()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment_name(library_version))
    if exp is None:
        return
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            "attributes.status = 'FINISHED'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            yield client, run
        token = page.token
        if not token:
            return


def count_runs(uri: str, library_version: str) -> int:
    """Finished runs of a library version."""
    return sum(1 for _ in finished_runs(uri, library_version))
