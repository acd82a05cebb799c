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


rule transfer:
    input:
        library=f"{LIBRARY}.manifest.json",
        data=lambda w: TARGET_DECLS[w.target][0].data,
        tracking=f"{RESULTS}/tracking.ready",
    output:
        summary=shown_in_report(f"{TRANSFER}/summary.json", "summary", "summary"),
        ranking=shown_in_report(f"{TRANSFER}/ranking.csv", "ranking", "ranking"),
        dropped=shown_in_report(f"{TRANSFER}/dropped.csv", "dropped", "dropped rows"),
        curve=shown_in_report(
            f"{TRANSFER}/learning_curve.csv", "learning_curve", "learning curve (table)"
        ),
        curve_png=shown_in_report(
            f"{TRANSFER}/learning_curve.png", "learning_curve", "learning curve"
        ),
        parity=shown_in_report(f"{TRANSFER}/parity.png", "parity", "parity plot"),
        report_md=shown_in_report(f"{TRANSFER}/report.md", "report", "report (markdown)"),
        report_html=shown_in_report(f"{TRANSFER}/report.html", "report", "report"),
        model=directory(f"{TRANSFER}/model"),
    log:
        f"{RESULTS}/logs/transfer/{{target}}.log",
    conda:
        ENV
    params:
        # The resolved options: a change re-runs the target (its description does not).
        options=lambda w: TARGET_DECLS[w.target][0].to_dict(),
        flags=lambda w: shlex.join(TransferOptions.flags(TARGET_DECLS[w.target][1])),
        declaration=lambda w: f"{TARGETS_DIR}/{w.target}.yaml",
        library=lambda w, input: input.library.removesuffix(".manifest.json"),
        out=lambda w, output: os.path.dirname(output.summary),
        # Each run is logged to the workflow's store (experiment shotgun-transfer), as training is.
        results=lambda w, input: os.path.dirname(input.tracking),
        uri=f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
    shell:
        "shotgun transfer --target {params.declaration} --library {params.library} "
        "--out {params.out} {params.flags} --results {params.results} {params.uri} "
        "> {log} 2>&1"


MAP = config.get("transfer_map")
MAP_OUT = [f"{RESULTS}/transfer_map/transfer_map.csv", f"{RESULTS}/transfer_map/transfer_map.png"]


rule transfer_map:
    input:
        library=f"{LIBRARY}.manifest.json",
        data=expand(f"{RESULTS}/data/{{dataset}}", dataset=config["sources"]),
    output:
        csv=report(MAP_OUT[0], caption="../report/transfer_map.rst", category="Transfer map"),
        png=report(MAP_OUT[1], caption="../report/transfer_map.rst", category="Transfer map"),
    log:
        f"{RESULTS}/logs/transfer_map.log",
    conda:
        ENV
    params:
        n=int((MAP or {}).get("n", 50)),
        folds=int((MAP or {}).get("folds", 5)),
        seed=int((MAP or {}).get("seed", config["seed"])),
        library=lambda w, input: input.library.removesuffix(".manifest.json"),
        results=lambda w, input: os.path.dirname(os.path.dirname(input.data[0])),
        out=lambda w, output: os.path.dirname(output.csv),
    shell:
        "shotgun transfer-map --library {params.library} --results {params.results} "
        "--out {params.out} --n {params.n} --folds {params.folds} "
        "--seed {params.seed} > {log} 2>&1"
