# Clean one source dataset: canonical inputs, per-property tables, quarantine with reasons.


rule prepare:
    input:
        declaration=f"{DATASETS_DIR}/{{dataset}}.yaml",
        data=lambda w: DATASETS[w.dataset].file,
    output:
        directory(f"{RESULTS}/data/{{dataset}}"),
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    conda:
        ENV
    params:
        max_rows=lambda w: (
            f"--max-rows {config['sources'][w.dataset]['max_rows']}"
            if config["sources"][w.dataset].get("max_rows")
            else ""
        ),
        seed=config["seed"],
    shell:
        "shotgun prepare --dataset {input.declaration} --out {output} {params.max_rows} "
        "--seed {params.seed} > {log} 2>&1"
