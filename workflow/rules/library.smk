# Assemble all shards into the versioned, checksummed library. The manifest stands for the
# folder: a directory output would get a Snakemake timestamp file the manifest does not list.


rule library:
    input:
        SHARDS,
    output:
        f"{LIBRARY}/manifest.json",
    log:
        f"{RESULTS}/logs/library.log",
    shell:
        "shotgun library build {input} --out {LIBRARY} --library-version {VERSION} > {log} 2>&1"
