# Transfer learning on the targets declared under `transfer:` in the config.


def _target(w):
    return config["transfer"][w.target]


rule transfer:
    input:
        library=f"{LIBRARY}.manifest.json",
        data=lambda w: _target(w)["data"],
    output:
        summary=f"{RESULTS}/transfer/{{target}}/summary.json",
        ranking=f"{RESULTS}/transfer/{{target}}/ranking.csv",
        parity=f"{RESULTS}/transfer/{{target}}/parity.png",
    params:
        t=_target,
        max_models=lambda w: (
            f"--max-models {_target(w)['max_models']}" if _target(w).get("max_models") else ""
        ),
    log:
        f"{RESULTS}/logs/transfer/{{target}}.log",
    shell:
        "shotgun transfer --library {LIBRARY} --data {input.data} "
        "--input {params.t[input]} --target {params.t[target]} --kind {params.t[kind]} "
        "--out {RESULTS}/transfer/{wildcards.target} --folds {params.t[folds]} "
        "--seed {params.t[seed]} {params.max_models} > {log} 2>&1"
