"""The ``shotgun`` command line. Each verb is one stage of the factory; heavy imports stay inside."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import MATERIAL_CLASSES, __version__, datasets_cli, library_cli


def _prepare(a):
    from .data import load_dataset, prepare

    import pandas as pd

    ds = load_dataset(a.dataset)
    out = Path(a.out)
    report = prepare(ds, out, Path(a.root), max_rows=a.max_rows, seed=a.seed)
    # The union of kept inputs over all properties: what the featurize stage computes.
    tables = [pd.read_parquet(out / f"{p}.parquet", columns=["input"]) for p in ds.properties]
    inputs = pd.concat(tables)["input"].drop_duplicates().sort_values()
    inputs.to_frame().to_csv(out / "inputs.csv", index=False)
    print(json.dumps(report, indent=1))


def _descriptor_params(pairs: list[str]) -> dict:
    """``key=value`` strings as a dict; values parsed as JSON when possible (3, true, [..])."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--descriptor-param expects key=value, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _featurize(a):
    from .featurize import featurize_inputs, make_descriptor, read_table, write_features

    d = make_descriptor(a.descriptor, _descriptor_params(a.descriptor_param))
    if a.kind not in d.kinds:
        raise ValueError(f"descriptor {a.descriptor!r} accepts {', '.join(d.kinds)} inputs, "
                         f"not {a.kind}")
    inputs = read_table(Path(a.data), a.input)[a.input].astype(str).tolist()
    try:
        X, ok, spec, names = featurize_inputs(inputs, d, n_workers=a.n_workers, cache_dir=a.cache,
                                              progress=True, scheduler_address=a.scheduler)
    except ConnectionError as err:  # --scheduler does not answer
        raise ValueError(str(err)) from err
    write_features(Path(a.out), inputs, X, ok, spec, names)
    failed = [i + 1 for i in range(len(ok)) if not ok[i]]
    print(f"{a.out}: {len(inputs)} rows, {len(names)} features, {len(failed)} failed"
          + (f" (rows {failed[:20]}{' ...' if len(failed) > 20 else ''})" if failed else ""))


def _init_tracking(a):
    from .tracking import init_store, resolve_uri

    uri = resolve_uri(a.uri, Path(a.results))
    exp = init_store(uri, a.library_version, Path(a.results) / "mlartifacts")
    print(f"{uri}: experiment {exp}")


def _indices(spec: str) -> list[int]:
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _train(a):
    from .data import load_dataset
    from .tracking import Tracker, resolve_uri
    from .training import compose_train_config, load_cell, train_shard

    ds = load_dataset(a.dataset)
    prop = ds.properties[a.property]
    cell = load_cell(Path(a.prepared), Path(a.features), ds.name, ds.material_class,
                     prop.name, prop.unit)
    cfg = compose_train_config(Path(a.config_dir), a.override)
    tracker = None
    if not a.no_tracking:
        tracker = Tracker(resolve_uri(a.tracking_uri, Path(a.results)), a.library_version)
    cards = train_shard(cell, cfg, _indices(a.models), Path(a.out), tracker, a.threads)
    for c in cards:
        m = c["metrics"]
        print(f"{c['model_id']} {c['architecture_name']} test MAE {m['test_mae']:.4g} "
              f"R2 {m['test_r2']:.3f} ({m['epochs']} epochs, {m['seconds']:.1f} s)")
    if a.done:  # the shard's completion marker, written last
        Path(a.done).write_text(json.dumps([c["model_id"] for c in cards]) + "\n")


def _grid(a):
    from .grid import load_config, resolve_sources, shards

    config = load_config(a.configfile)
    sources = resolve_sources(config)
    planned = list(shards(config, sources))
    if not a.count:
        for s in planned:
            print(f"{s.dataset} {s.property} {s.descriptor} {s.models}")
    cells = {(s.dataset, s.property, s.descriptor) for s in planned}
    print(f"{len(sources)} datasets, {len(cells)} cells, {len(planned)} shards; models:")
    print(sum(s.n_models for s in planned))


def _predict(a):
    import pandas as pd

    from .featurize import read_table

    df = read_table(Path(a.data), a.input)
    inputs = df[a.input].astype(str).tolist()
    if a.library:  # a library model, in its property's unit
        from .library import Library

        model = Library.open(a.library).load(a.model)
        pred = model.predict(inputs, kind=a.kind)
        column = f"{model.card['property']} [{model.card['unit']}]"
    else:  # a transfer pipeline saved by `shotgun transfer` (OUT/model)
        from .transfer import TransferModel

        if not (Path(a.model) / "model.json").is_file():
            raise FileNotFoundError(f"{a.model}: not a saved transfer model (no model.json); "
                                    "give --library for a library model id")
        model = TransferModel(Path(a.model))
        pred = model.predict(inputs)
        unit = model.meta.get("unit")
        column = model.meta["target"] + (f" [{unit}]" if unit else "")
    out = pd.DataFrame({a.input: df[a.input], column: pred})
    if a.out:
        out.to_csv(a.out, index=False)
        print(f"{a.out}: {len(out)} predictions, {int(pd.isna(pred).sum())} inputs not featurizable")
    else:
        print(out.to_csv(index=False), end="")


def _transfer(a):
    from .transfer import run_transfer

    s = run_transfer(Path(a.library), Path(a.data), a.input, a.target, a.kind, Path(a.out),
                     folds=a.folds, seed=a.seed, max_models=a.max_models,
                     max_depth=a.max_depth, learners=a.learners.split(","),
                     baselines=a.baselines.split(","), refine=a.refine, repeats=a.repeats,
                     split=a.split, nested=a.nested, fine_tune=a.fine_tune, stack=a.stack,
                     scheduler=a.scheduler, n_workers=a.n_workers, n=a.n, unit=a.unit)
    b, base = s["best"], s["baseline"]
    print(f"{s['n_samples']} samples ({s['n_dropped']} dropped), {s['n_candidates']} candidates, "
          f"{s['folds']}-fold CV ({s['split']}), {s['seconds']} s")
    print(f"best transfer (same folds): {b['dataset']}/{b['property']} ({b['model_id']}, depth "
          f"{b['depth']}, {b['learner']}): MAE {b['cv_mae']:.4g}, R2 {b['cv_r2']:.3f}")
    print(f"baseline {base['name']}: MAE {base['cv_mae']:.4g}, R2 {base['cv_r2']:.3f}")
    print("methods on the same folds: " + ", ".join(
        f"{m['method']} {m['cv_mae']:.4g}" for m in s["methods"]) + f"; winner {s['winner']}")
    if s["nested"]:
        n = s["nested"]
        print(f"nested CV: transfer MAE {n['cv_mae']:.4g}, R2 {n['cv_r2']:.3f}; baseline MAE "
              f"{n['baseline']['cv_mae']:.4g}, R2 {n['baseline']['cv_r2']:.3f}")
    print(f"refitted best pipeline: {Path(a.out) / s['model']} (shotgun predict --model)")


def _transfer_map(a):
    from .transfer_map import write_transfer_map

    df = write_transfer_map(Path(a.library), Path(a.results), Path(a.out), n=a.n, seed=a.seed,
                            folds=a.folds)
    print(f"{a.out}: {len(df)} (source, target) pairs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shotgun",
        description="Factory of pretrained materials-property models for shotgun transfer learning.")
    p.add_argument("--version", action="version", version=f"shotgun {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="clean one source dataset into per-property tables")
    s.add_argument("--dataset", required=True, help="dataset declaration (config/datasets/*.yaml)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--root", default=".", help="folder the declared data file is relative to")
    s.add_argument("--max-rows", type=int, default=None, help="seeded subsample per property")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_prepare)

    from . import INPUT_KINDS
    from .descriptors import DESCRIPTORS

    s = sub.add_parser("featurize", help="compute a descriptor for a column of inputs")
    s.add_argument("--data", required=True, help="CSV or Parquet file")
    s.add_argument("--input", required=True,
                   help="column of SMILES, formulas or structures (pymatgen Structure JSON)")
    s.add_argument("--kind", required=True, choices=INPUT_KINDS)
    s.add_argument("--descriptor", required=True, choices=sorted(DESCRIPTORS),
                   metavar="DESCRIPTOR", help=f"one of {', '.join(DESCRIPTORS)}")
    s.add_argument("--descriptor-param", action="append", default=[], metavar="KEY=VALUE",
                   help="descriptor parameter, repeatable (e.g. radius=2, counts=false)")
    s.add_argument("--out", required=True, help="output Parquet: input, ok, one column per feature")
    s.add_argument("--n-workers", type=int, default=1,
                   help="processes of the local Dask cluster started for large inputs")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler to send the work to instead (e.g. tcp://host:8786)")
    s.add_argument("--cache", default=None, help="feature cache folder (content addressed)")
    s.set_defaults(func=_featurize)

    s = sub.add_parser("init-tracking", help="create the MLflow store and experiment once")
    s.add_argument("--results", required=True, help="results folder (holds the embedded store)")
    s.add_argument("--uri", default=None, help="tracking URI (default: sqlite store in results)")
    s.add_argument("--library-version", required=True)
    s.set_defaults(func=_init_tracking)

    s = sub.add_parser("train", help="train one shard of models of a (dataset, property, descriptor) cell")
    s.add_argument("--dataset", required=True, help="dataset declaration YAML")
    s.add_argument("--property", required=True)
    s.add_argument("--prepared", required=True, help="prepared property table (Parquet)")
    s.add_argument("--features", required=True, help="feature table of the dataset (Parquet)")
    s.add_argument("--models", required=True, help="model indices, e.g. 0-3")
    s.add_argument("--out", required=True, help="shard folder")
    s.add_argument("--config-dir", default="config/train", help="Hydra config folder")
    s.add_argument("--override", action="append", default=[], help="Hydra override, repeatable")
    s.add_argument("--results", default="results", help="results folder (embedded MLflow store)")
    s.add_argument("--tracking-uri", default=None)
    s.add_argument("--library-version", default="0")
    s.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--done", help="completion marker written after the last model (JSON ids)")
    s.set_defaults(func=_train)

    s = sub.add_parser("grid", help="the shards a workflow config plans; last line: models")
    s.add_argument("--configfile", required=True, help="workflow config, e.g. config/mdl.yaml")
    s.add_argument("--count", action="store_true", help="print only the number of models")
    s.set_defaults(func=_grid)

    library_cli.add_parser(sub)
    datasets_cli.add_parser(sub)

    s = sub.add_parser("predict", help="predict with a library model (output in its unit) or "
                                       "with a transfer pipeline saved by `shotgun transfer`")
    s.add_argument("--library", help="library folder (with --model: a model id)")
    s.add_argument("--model", required=True,
                   help="library model id, or without --library a saved transfer model folder "
                        "(the transfer output's model/)")
    s.add_argument("--data", required=True, help="CSV of SMILES or formulas")
    s.add_argument("--input", required=True, help="input column")
    s.add_argument("--kind", choices=MATERIAL_CLASSES,
                   help="material class of the inputs when not the model's own (e.g. molecule "
                        "for a composition model: through organic_composition)")
    s.add_argument("--out", help="output CSV (default: standard output)")
    s.set_defaults(func=_predict)

    from .learners import BASELINE_LEARNERS, LEARNERS, TRANSFER_LEARNERS
    from .screening import NESTED_MAX_ROWS

    s = sub.add_parser("transfer", help="screen library models for a small target dataset")
    s.add_argument("--library", required=True)
    s.add_argument("--data", required=True, help="target CSV")
    s.add_argument("--input", required=True, help="column of SMILES or formulas")
    s.add_argument("--target", required=True, help="column of target values")
    s.add_argument("--kind", required=True, help=f"material class: {', '.join(MATERIAL_CLASSES)}")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-models", type=int, default=None,
                   help="screen only the N candidates with the best source test R2")
    s.add_argument("--max-depth", type=int, default=2, help="hidden layers used as features: 1..N")
    s.add_argument("--n", type=int, help="use a seeded subsample of N usable rows")
    s.add_argument("--unit", help="the target's unit (plots and report)")
    s.add_argument("--learners", default=",".join(TRANSFER_LEARNERS),
                   help="learners on neural features (ridge screens all candidates; the others "
                        f"refine the best): comma-separated from {', '.join(LEARNERS[:4])}; "
                        "random_forest is slow on many pipelines")
    s.add_argument("--refine", type=int, default=3,
                   help="ridge-best pipelines per selection tried with the other learners")
    s.add_argument("--baselines", default=",".join(BASELINE_LEARNERS),
                   help="from-scratch learners on the raw descriptors")
    s.add_argument("--repeats", type=int, default=1, help="repeated K-fold with new shuffles")
    s.add_argument("--split", choices=("random", "extrapolate"), default="random",
                   help="extrapolate: train on the lowest 80%% of target values, test on the "
                        "top 20%%")
    s.add_argument("--nested", action=argparse.BooleanOptionalAction, default=None,
                   help="nested CV estimate and learning curve (default: on up to "
                        f"{NESTED_MAX_ROWS} rows)")
    s.add_argument("--fine-tune", type=int, default=3,
                   help="fine-tune the N best source networks on the same folds (0: off)")
    s.add_argument("--stack", type=int, default=5,
                   help="stacked ensemble: mean of the top K transferred models (1: off)")
    s.add_argument("--scheduler", help="Dask scheduler address for the screen "
                                       "(default: a local cluster of --n-workers)")
    s.add_argument("--n-workers", type=int, default=1,
                   help="screening worker processes on this machine")
    s.set_defaults(func=_transfer)

    s = sub.add_parser("transfer-map",
                       help="gain of every source property for every other library property")
    s.add_argument("--library", required=True)
    s.add_argument("--results", required=True,
                   help="workflow results folder (prepared tables under data/<dataset>/)")
    s.add_argument("--out", required=True, help="folder for transfer_map.csv and transfer_map.png")
    s.add_argument("--n", type=int, default=50, help="seeded subsample of each target property")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--folds", type=int, default=5)
    s.set_defaults(func=_transfer_map)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .library import LibraryError

    try:
        return args.func(args) or 0
    except (LibraryError, FileNotFoundError, ValueError) as err:  # data, transfer errors are ValueErrors
        print(f"shotgun: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
