# Descriptor matrix of every cleaned input of a dataset: Dask-parallel on a local cluster of the
# job's threads, or on the scheduler of config `dask_scheduler` when set.
# The descriptor's version is a param: a new version re-runs this rule and what depends on it.
# Inputs already featurized with the same descriptor spec come from the content-addressed cache.
from shotgun.descriptors import get_descriptor


rule featurize:
    input:
        f"{RESULTS}/data/{{dataset}}",
    output:
        f"{RESULTS}/features/{{dataset}}/{{descriptor}}.parquet",
    log:
        f"{RESULTS}/logs/featurize/{{dataset}}/{{descriptor}}.log",
    conda:
        ENV
    threads: 2
    params:
        kind=lambda w: DATASETS[w.dataset].material_class,
        version=lambda w: get_descriptor(w.descriptor).version,
        cache=f"{RESULTS}/cache/features",
        # A function of threads: Snakemake then leaves it out of the rerun triggers, as where
        # the features are computed does not change them.
        dask=lambda w, threads: f"--n-workers {threads}"
        + (f" --scheduler {config['dask_scheduler']}" if config.get("dask_scheduler") else ""),
    shell:
        "shotgun featurize --data {input}/inputs.csv --input input --kind {params.kind} "
        "--descriptor {wildcards.descriptor} --out {output} {params.dask} "
        "--cache {params.cache} > {log} 2>&1"
