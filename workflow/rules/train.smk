# Training: the MLflow store is created once, then each job trains one shard of K models.
# A shard's output is its completion marker, not its model folder: Snakemake deletes outputs
# before re-running a job, and an interrupted shard must keep (and skip) its finished models.


rule init_tracking:
    output:
        touch(f"{RESULTS}/tracking.ready"),
    params:
        uri=f"--uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
    log:
        f"{RESULTS}/logs/init_tracking.log",
    shell:
        "shotgun init-tracking --results {RESULTS} {params.uri} "
        "--library-version {VERSION} > {log} 2>&1"


rule train_shard:
    input:
        data=f"{RESULTS}/data/{{dataset}}",
        features=f"{RESULTS}/features/{{dataset}}/{{descriptor}}.parquet",
        tracking=f"{RESULTS}/tracking.ready",
    output:
        f"{RESULTS}/models/{{dataset}}/{{property}}/{{descriptor}}/{{models}}.done",
    params:
        folder=f"{RESULTS}/models/{{dataset}}/{{property}}/{{descriptor}}/{{models}}",
        overrides=" ".join(f"--override {o}" for o in TRAIN_OVERRIDES),
        uri=f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
    threads: 1
    resources:
        gpu=1 if config["accelerator"] == "gpu" else 0,
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{property}}/{{descriptor}}/{{models}}.log",
    shell:
        "shotgun train --dataset {DATASETS_DIR}/{wildcards.dataset}.yaml "
        "--property {wildcards.property} --prepared {input.data}/{wildcards.property}.parquet "
        "--features {input.features} --models {wildcards.models} --out {params.folder} "
        "--config-dir config/train {params.overrides} --results {RESULTS} {params.uri} "
        "--library-version {VERSION} --threads {threads} --done {output} > {log} 2>&1"
