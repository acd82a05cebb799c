# Assemble all shards into the versioned, checksummed library. The library path is a link that
# the build switches atomically to a new folder under <library>.versions/; the rule's output is a
# copy of the built manifest beside it (Snakemake deletes a rule's outputs before re-running it,
# which must never touch the current library).


rule library:
    input:
        SHARDS,  # completion markers of the shards in SHARD_DIRS
    output:
        f"{LIBRARY}.manifest.json",
    log:
        f"{RESULTS}/logs/library.log",
    conda:
        ENV
    params:
        shards=SHARD_DIRS,
        library=lambda w, output: output[0].removesuffix(".manifest.json"),
        version=VERSION,
    shell:
        "shotgun library build {params.shards} --out {params.library} "
        "--library-version {params.version} > {log} 2>&1 "
        "&& cp {params.library}/manifest.json {output}"
