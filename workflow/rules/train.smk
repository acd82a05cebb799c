# Training: the MLflow store is created once, then each job trains one shard of K models.
# A shard's output is its completion marker, not its model folder: Snakemake deletes outputs
# before re-running a job, and an interrupted shard must keep (and skip) its finished models.


rule init_tracking:
    output:
        touch(f"{RESULTS}/tracking.ready"),
    log:
        f"{RESULTS}/logs/init_tracking.log",
    conda:
        ENV
    params:
        results=lambda w, output: os.path.dirname(output[0]),
        uri=f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
        version=VERSION,
    shell:
        "shotgun init-tracking --results {params.results} {params.uri} "
        "--library-version {params.version} > {log} 2>&1"


rule train_shard:
    input:
        data=f"{RESULTS}/data/{{dataset}}",
        features=f"{RESULTS}/features/{{dataset}}/{{descriptor}}.parquet",
        tracking=f"{RESULTS}/tracking.ready",
    output:
        f"{RESULTS}/models/{{dataset}}/{{property}}/{{descriptor}}/{{models}}.done",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{property}}/{{descriptor}}/{{models}}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=1 if config["accelerator"] == "gpu" else 0,
    params:
        declaration=lambda w: f"{DATASETS_DIR}/{w.dataset}.yaml",
        folder=lambda w, output: output[0].removesuffix(".done"),
        overrides=lambda w: " ".join(f"--override {o}" for o in shard_overrides(w.descriptor)),
        results=lambda w, input: os.path.dirname(input.tracking),
        uri=f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
        version=VERSION,
    shell:
        "shotgun train --dataset {params.declaration} "
        "--property {wildcards.property} --prepared {input.data}/{wildcards.property}.parquet "
        "--features {input.features} --models {wildcards.models} --out {params.folder} "
        "--config-dir config/train {params.overrides} --results {params.results} {params.uri} "
        "--library-version {params.version} --threads {threads} --done {output} > {log} 2>&1"
