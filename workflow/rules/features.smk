# Descriptor matrix of every cleaned input of a dataset (Dask-parallel over the job's threads).
# The descriptor's version is a param: a new version re-runs this rule and what depends on it.
# Inputs already featurized with the same descriptor spec come from the content-addressed cache.
from shotgun.descriptors import get_descriptor


rule featurize:
    input:
        f"{RESULTS}/data/{{dataset}}",
    output:
        f"{RESULTS}/features/{{dataset}}/{{descriptor}}.parquet",
    params:
        kind=lambda w: DATASETS[w.dataset]["material_class"],
        version=lambda w: get_descriptor(w.descriptor).version,
        cache=f"{RESULTS}/cache/features",
    threads: 2
    log:
        f"{RESULTS}/logs/featurize/{{dataset}}/{{descriptor}}.log",
    shell:
        "shotgun featurize --data {input}/inputs.csv --input input --kind {params.kind} "
        "--descriptor {wildcards.descriptor} --out {output} --n-workers {threads} "
        "--cache {params.cache} > {log} 2>&1"
