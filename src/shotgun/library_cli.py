"""`shotgun library ...`: build, query, show, verify, diff, pack, unpack and rebuild libraries."""

from __future__ import annotations

import json
from pathlib import Path

from . import MATERIAL_CLASSES

INDEX_VIEW = ["model_id", "material_class", "dataset", "property", "unit", "descriptor",
              "architecture", "n_train", "test_mae", "test_r2"]


def _query_args(a) -> dict:
    q = {"kind": a.kind, "property": a.property, "descriptor": a.descriptor,
         "dataset": a.dataset, "min_r2": a.min_r2, "top": a.top}
    return {k: v for k, v in q.items() if v is not None}


def _build(a):
    from .library import build_library

    manifest = build_library([Path(p) for p in a.shards], Path(a.out), a.library_version)
    print(f"{a.out}: library {a.library_version} with {manifest['n_models']} models")


def _query(a):
    from .library import Library

    q = Library.open(a.library).query(**_query_args(a))
    if a.format == "json":
        print(q.to_json(orient="records", indent=1))
    else:
        print(q[INDEX_VIEW].to_string(index=False) if len(q) else "no models match")


def render_card(card: dict) -> str:
    """A model card as readable text."""
    m, arch, d = card["metrics"], card["architecture"], card["descriptor"]
    t = card["train_config"]
    params = ", ".join(f"{k}={v}" for k, v in d["params"].items())
    lines = [
        f"model {card['model_id']}",
        f"  property     {card['property']} [{card['unit']}] of {card['dataset']} "
        f"({card['material_class']})",
        f"  data         {card['n_train']} train / {card['n_val']} validation / {card['n_test']} test"
        f" rows, data hash {card['data_hash'][:16]}",
        f"  descriptor   {d['name']} v{d['version']} ({params})",
        f"  architecture {card['architecture_name']}, dropout {arch['dropout']}, "
        f"batch norm {arch['batch_norm']}",
        f"  test         MAE {m['test_mae']:.4g}, RMSE {m['test_rmse']:.4g}, R2 {m['test_r2']:.3f}",
        f"  training     {t['optim']['name']} lr {t['optim']['lr']}, batch {t['trainer']['batch_size']}"
        f", {m['epochs']} epochs (best {m['best_epoch']}), seed {t['seed']}, index {card['index']}"
        f", precision {t['trainer'].get('precision', 32)}"
        f" (float32 matmul {t['trainer'].get('matmul_precision', 'highest')})",
        f"  target scale mean {card['target_scaler']['mean']:.6g}, std {card['target_scaler']['std']:.6g}",
        f"  provenance   shotgun {card['shotgun_version']}, MLflow run "
        f"{card.get('mlflow_run_id') or '-'}, weights sha256 {card['weights_sha256'][:16]}",
    ]
    return "\n".join(lines)


def _show(a):
    from .library import Library

    card = Library.open(a.library).card(a.model_id)
    print(json.dumps(card, indent=1, sort_keys=True) if a.format == "json" else render_card(card))


def _verify(a):
    from .library import Library

    lib = Library.open(a.library)
    problems = lib.verify()
    for p in problems:
        print(p)
    print(f"{a.library}: {len(lib.manifest['files'])} files, "
          + ("all checksums verify" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


def _diff(a):
    from .library import Library, diff_libraries

    d = diff_libraries(Library.open(a.a), Library.open(a.b))
    if a.format == "json":
        print(json.dumps(d, indent=1))
        return
    print(f"{a.a} ({d['a']['version']}, {d['a']['n_models']} models) -> "
          f"{a.b} ({d['b']['version']}, {d['b']['n_models']} models)")
    for key in ("added", "removed", "changed"):
        print(f"{key}: {len(d[key])}" + "".join(f"\n  {m}" for m in d[key]))
    print(f"unchanged: {d['unchanged']}")


def _pack(a):
    from .library import Library, pack

    n = pack(Library.open(a.library), Path(a.archive), **_query_args(a))
    print(f"{a.archive}: {n} models")


def _unpack(a):
    from .library import unpack

    lib = unpack(Path(a.archive), Path(a.dest))
    print(f"{a.dest}: library {lib.version} with {len(lib.index)} models, checksums verified")


def _from_mlflow(a):
    from .library import from_mlflow
    from .tracking import resolve_uri

    uri = resolve_uri(a.tracking_uri, Path(a.results))
    manifest = from_mlflow(uri, a.library_version, Path(a.out))
    print(f"{a.out}: library {a.library_version} with {manifest['n_models']} models from {uri}")


def _add_query(s):
    s.add_argument("--kind", choices=MATERIAL_CLASSES, help="material class of the source data")
    s.add_argument("--property")
    s.add_argument("--descriptor")
    s.add_argument("--dataset")
    s.add_argument("--min-r2", type=float, help="minimum test R2")
    s.add_argument("--top", type=int, help="best N by test R2")


def add_parser(sub) -> None:
    lib = sub.add_parser("library", help="build, query, verify, diff and share model libraries")
    lsub = lib.add_subparsers(dest="library_command", required=True)

    s = lsub.add_parser("build", help="assemble trained shards into a library")
    s.add_argument("shards", nargs="+", help="shard folders")
    s.add_argument("--out", required=True, help="library path (a link to the current build)")
    s.add_argument("--library-version", required=True)
    s.set_defaults(func=_build)

    for name in ("list", "query"):
        s = lsub.add_parser(name, help="query the index: models by class, property, descriptor, R2")
        s.add_argument("library")
        _add_query(s)
        s.add_argument("--format", choices=("table", "json"), default="table")
        s.set_defaults(func=_query)

    s = lsub.add_parser("show", help="render a model card")
    s.add_argument("library")
    s.add_argument("model_id")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_show)

    s = lsub.add_parser("verify", help="check every file against the manifest")
    s.add_argument("library")
    s.set_defaults(func=_verify)

    s = lsub.add_parser("diff", help="models added, removed and changed between two libraries")
    s.add_argument("a")
    s.add_argument("b")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_diff)

    s = lsub.add_parser("pack", help="write a library, or the subset a query selects, to .tar.gz")
    s.add_argument("library")
    s.add_argument("archive")
    _add_query(s)
    s.set_defaults(func=_pack)

    s = lsub.add_parser("unpack", help="extract a packed library, verifying every checksum")
    s.add_argument("archive")
    s.add_argument("dest", help="new folder")
    s.set_defaults(func=_unpack)

    s = lsub.add_parser("from-mlflow", help="rebuild a library from the tracking store")
    s.add_argument("--out", required=True, help="new library folder")
    s.add_argument("--library-version", required=True)
    s.add_argument("--results", default="results", help="results folder (embedded store)")
    s.add_argument("--tracking-uri", default=None)
    s.set_defaults(func=_from_mlflow)
