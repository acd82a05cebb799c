# Transfer learning on the targets listed under `targets:` in the config (each declared in
# <targets_dir>/<name>.yaml; an entry {name, key: value} overrides declared options, passed on as
# flags), and the optional transferability map of the library's properties.
# Every output goes into `snakemake --report`, with its caption under workflow/report/.
import shlex

from shotgun.transfer.options import TransferOptions, declared_target

TARGETS_DIR = config.get("targets_dir", "config/targets")
# name -> (options, overrides), every declaration checked now (errors name the file and key).
TARGET_DECLS = {}
for _entry in config.get("targets", []):
    _name, _options, _overrides = declared_target(_entry, TARGETS_DIR)
    TARGET_DECLS[_name] = (_options, _overrides)
TARGETS = list(TARGET_DECLS)
TRANSFER = f"{RESULTS}/transfer/{{target}}"


def _shown(path, caption, name):
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category="Transfer",
        subcategory="{target}",
        labels={"target": "{target}", "file": name},
    )


rule transfer:
    input:
        library=f"{LIBRARY}.manifest.json",
        data=lambda w: TARGET_DECLS[w.target][0].data,
    output:
        summary=_shown(f"{TRANSFER}/summary.json", "summary", "summary"),
        ranking=_shown(f"{TRANSFER}/ranking.csv", "ranking", "ranking"),
        curve=_shown(
            f"{TRANSFER}/learning_curve.csv", "learning_curve", "learning curve (table)"
        ),
        curve_png=_shown(f"{TRANSFER}/learning_curve.png", "learning_curve", "learning curve"),
        parity=_shown(f"{TRANSFER}/parity.png", "parity", "parity plot"),
        report_md=_shown(f"{TRANSFER}/report.md", "report", "report (markdown)"),
        report_html=_shown(f"{TRANSFER}/report.html", "report", "report"),
        model=directory(f"{TRANSFER}/model"),
    params:
        # The resolved options: a change re-runs the target (its description does not).
        options=lambda w: TARGET_DECLS[w.target][0].to_dict(),
        flags=lambda w: shlex.join(TransferOptions.flags(TARGET_DECLS[w.target][1])),
    log:
        f"{RESULTS}/logs/transfer/{{target}}.log",
    shell:
        "shotgun transfer --target {TARGETS_DIR}/{wildcards.target}.yaml --library {LIBRARY} "
        "--out {RESULTS}/transfer/{wildcards.target} {params.flags} > {log} 2>&1"


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
