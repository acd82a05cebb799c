# Transfer learning on the targets listed under `targets:` in the config (each declared in
# <targets_dir>/<name>.yaml), and the optional transferability map of the library's properties.
# Every output goes into `snakemake --report`, with its caption under workflow/report/.
import yaml

from snakemake.exceptions import WorkflowError

TARGETS_DIR = config.get("targets_dir", "config/targets")


def _declared(entry):
    """(name, declaration) of a `targets:` entry: the YAML with the entry's overrides, validated."""
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    name = entry.pop("name")
    # `--config targets=...` passes every value as text: read it as YAML.
    entry = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in entry.items()}
    path = f"{TARGETS_DIR}/{name}.yaml"
    if not os.path.isfile(path):
        raise ValueError(f"targets: {name!r} is not declared ({path} does not exist)")
    with open(path) as f:
        target = {**yaml.safe_load(f), **entry}
    try:
        validate(target, "../schemas/target.schema.yaml")
    except WorkflowError as err:
        raise ValueError(f"{path} (with the config's overrides {entry}): {err}") from None
    return name, target


TARGET_DECLS = dict(_declared(e) for e in config.get("targets", []))
TARGETS = list(TARGET_DECLS)
TRANSFER = f"{RESULTS}/transfer/{{target}}"


def _run(w):
    """The keys of a target that change its results (not its description, citation or unit)."""
    t = TARGET_DECLS[w.target]
    return {k: t[k] for k in ("data", "input", "target", "kind", "folds", "seed")}


def _options(w):
    """Optional `shotgun transfer` flags of a target."""
    t = TARGET_DECLS[w.target]
    flags = [f"--{key.replace('_', '-')} {t[key]}"
             for key in ("max_models", "n", "repeats", "split") if t.get(key) is not None]
    if t.get("nested") is not None:
        flags.append("--nested" if t["nested"] else "--no-nested")
    return " ".join(flags)


def _shown(path, caption, name):
    return report(path, caption=f"../report/{caption}.rst", category="Transfer",
                  subcategory="{target}", labels={"target": "{target}", "file": name})


rule transfer:
    input:
        library=f"{LIBRARY}.manifest.json",
        data=lambda w: TARGET_DECLS[w.target]["data"],
    output:
        summary=_shown(f"{TRANSFER}/summary.json", "summary", "summary"),
        ranking=_shown(f"{TRANSFER}/ranking.csv", "ranking", "ranking"),
        curve=_shown(f"{TRANSFER}/learning_curve.csv", "learning_curve", "learning curve (table)"),
        curve_png=_shown(f"{TRANSFER}/learning_curve.png", "learning_curve", "learning curve"),
        parity=_shown(f"{TRANSFER}/parity.png", "parity", "parity plot"),
        report_md=_shown(f"{TRANSFER}/report.md", "report", "report (markdown)"),
        report_html=_shown(f"{TRANSFER}/report.html", "report", "report"),
        model=directory(f"{TRANSFER}/model"),
    params:
        t=_run,
        options=_options,
        unit=lambda w: TARGET_DECLS[w.target]["unit"],
    log:
        f"{RESULTS}/logs/transfer/{{target}}.log",
    shell:
        "shotgun transfer --library {LIBRARY} --data {input.data:q} --input {params.t[input]:q} "
        "--target {params.t[target]:q} --kind {params.t[kind]} "
        "--out {RESULTS}/transfer/{wildcards.target} --folds {params.t[folds]} "
        "--seed {params.t[seed]} --unit {params.unit:q} {params.options} > {log} 2>&1"


MAP = config.get("transfer_map")
MAP_OUT = [f"{RESULTS}/transfer_map/transfer_map.csv", f"{RESULTS}/transfer_map/transfer_map.png"]


rule transfer_map:
    input:
        library=f"{LIBRARY}.manifest.json",
        data=expand(f"{RESULTS}/data/{{dataset}}", dataset=config["sources"]),
    output:
        csv=report(MAP_OUT[0], caption="../report/transfer_map.rst", category="Transfer map"),
        png=report(MAP_OUT[1], caption="../report/transfer_map.rst", category="Transfer map"),
    params:
        n=int((MAP or {}).get("n", 50)),
        folds=int((MAP or {}).get("folds", 5)),
        seed=int((MAP or {}).get("seed", config["seed"])),
    log:
        f"{RESULTS}/logs/transfer_map.log",
    shell:
        "shotgun transfer-map --library {LIBRARY} --results {RESULTS} --out {RESULTS}/transfer_map "
        "--n {params.n} --folds {params.folds} --seed {params.seed} > {log} 2>&1"
