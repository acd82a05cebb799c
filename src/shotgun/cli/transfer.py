"""Verbs of transfer learning: ``transfer`` (one target) and ``transfer-map`` (every library
property as a target)."""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from ..errors import ShotgunWarning
from .command import Command


def transfer_options(a: argparse.Namespace):
    """The run's :class:`TransferOptions`: a target declaration given as ``--target FILE.yaml``
    with the other flags on top, or the flags alone."""
    from ..transfer.options import TransferError, TransferOptions

    given = {k: v for k, v in vars(a).items() if k in TransferOptions.__dataclass_fields__}
    target = given.get("target")
    if target and target.endswith((".yaml", ".yml")):
        if not Path(target).is_file():
            raise TransferError(f"--target {target}: no such target declaration")
        given.pop("target")
        return TransferOptions.from_yaml(Path(target), given)
    return TransferOptions.from_mapping(given, "shotgun transfer")


class Transfer(Command):
    name = "transfer"
    help = "screen library models for a small target dataset"
    description = (
        "Screen library models for a small target dataset. Give the target as --data, "
        "--input, --target (column) and --kind, or as --target config/targets/NAME.yaml "
        "(a declaration; the other flags override its options). With --tracking-uri or "
        "--results the run is logged to MLflow (experiment shotgun-transfer) after its files "
        "are written."
    )

    def add_arguments(self, s):
        from ..transfer.options import TransferOptions

        s.add_argument("--library", required=True)
        s.add_argument("--out", required=True, help="output folder")
        TransferOptions.add_arguments(s)
        s.add_argument(
            "--scheduler",
            help="Dask scheduler address for the screen (default: a local cluster of --n-workers)",
        )
        s.add_argument(
            "--n-workers", type=int, default=1, help="screening worker processes on this machine"
        )
        s.add_argument(
            "--tracking-uri",
            help="log the run to this MLflow store (default: not logged, unless --results)",
        )
        s.add_argument(
            "--results",
            help="log the run to the MLflow store of this workflow results folder (its mlflow.db)",
        )

    def run(self, a):
        from ..transfer import run_transfer
        from ..transfer.report import control_sentence, leakage_line

        uri, start = None, int(time.time() * 1000)
        if a.tracking_uri or a.results:  # checked before the work, imports MLflow only then
            from ..tracking import open_store

            uri = open_store(a.tracking_uri, Path(a.results or "."), create=not a.results)
        options = transfer_options(a)
        s = run_transfer(
            Path(a.library),
            options,
            Path(a.out),
            scheduler=a.scheduler,
            n_workers=a.n_workers,
        )
        b, base = s.best, s.baseline
        print(
            f"{s.n_samples} samples ({s.n_dropped} dropped: {Path(a.out) / 'dropped.csv'}), "
            f"{s.n_candidates} candidates, "
            f"{s.folds}-fold CV ({s.split}), {s.seconds} s"
        )
        print(
            f"best transfer (same folds): {b.dataset}/{b.property} ({b.model_id}, depth "
            f"{b.depth}, {b.learner}): MAE {b.cv_mae:.4g}, R2 {b.cv_r2:.3f}"
        )
        print(f"baseline {base.name}: MAE {base.cv_mae:.4g}, R2 {base.cv_r2:.3f}")
        print(
            "methods on the same folds: "
            + ", ".join(f"{m.method} {m.cv_mae:.4g}" for m in s.methods)
            + f"; winner {s.winner}"
        )
        if s.nested:
            n = s.nested
            print(
                f"nested CV: transfer MAE {n.cv_mae:.4g}, R2 {n.cv_r2:.3f}; baseline MAE "
                f"{n.baseline.cv_mae:.4g}, R2 {n.baseline.cv_r2:.3f}"
            )
        if s.nested and s.nested.selected:
            sel = s.nested.selected
            print(f"nested CV of the selected method: MAE {sel.cv_mae:.4g}, R2 {sel.cv_r2:.3f}")
        print(control_sentence(s))
        print(leakage_line(s))
        saved = f"{s.saved.method}, {s.saved.name}" if s.saved else s.winner
        print(f"refitted winner ({saved}): {Path(a.out) / s.model} (shotgun predict --model)")
        if uri:
            log_run(uri, Path(a.out), options, Path(a.library), start)


def log_run(uri: str, out: Path, options, library: Path, start_ms: int) -> None:
    """Log a finished transfer to MLflow. Its files are written already: a failure to log is a
    warning, so that the command (and a workflow job, whose outputs a failure would delete)
    keeps them."""
    from ..library import Library
    from ..tracking import TRANSFER_EXPERIMENT, log_transfer

    try:
        rid = log_transfer(uri, out, options.to_dict(), Library.open(library), start_ms)
    except Exception as err:  # MLflow, the network or the store: any of them may fail
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(
            ShotgunWarning(f"{out}: written, but not logged to {uri}: {reason}"), stacklevel=2
        )
        return
    print(f"MLflow run {rid} (experiment {TRANSFER_EXPERIMENT}) in {uri}")


class TransferMap(Command):
    name = "transfer-map"
    help = "gain of every source property for every other library property"

    def add_arguments(self, s):
        s.add_argument("--library", required=True)
        s.add_argument(
            "--results",
            required=True,
            help="workflow results folder (prepared tables under data/<dataset>/)",
        )
        s.add_argument(
            "--out", required=True, help="folder for transfer_map.csv and transfer_map.png"
        )
        s.add_argument("--n", type=int, default=50, help="seeded subsample of each target property")
        s.add_argument("--seed", type=int, default=0, help="subsamples, folds and learners")
        s.add_argument("--folds", type=int, default=5, help="K-fold cross-validation")

    def run(self, a):
        from ..transfer import write_transfer_map

        df = write_transfer_map(
            Path(a.library), Path(a.results), Path(a.out), n=a.n, seed=a.seed, folds=a.folds
        )
        print(f"{a.out}: {len(df)} (source, target) pairs")


COMMANDS = [Transfer(), TransferMap()]
