# Descriptor matrix of every cleaned input of a dataset (Dask-parallel over the job's threads).


rule featurize:
    input:
        f"{RESULTS}/data/{{dataset}}",
    output:
        f"{RESULTS}/features/{{dataset}}/{{descriptor}}.parquet",
    params:
        kind=lambda w: DATASETS[w.dataset]["material_class"],
    threads: 2
    log:
        f"{RESULTS}/logs/featurize/{{dataset}}/{{descriptor}}.log",
    shell:
        "shotgun featurize --data {input}/inputs.csv --input input --kind {params.kind} "
        "--descriptor {wildcards.descriptor} --out {output} --n-workers {threads} > {log} 2>&1"
