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


rule library_report:
    input:
        f"{LIBRARY}.manifest.json",
    output:
        md=report(
            f"{RESULTS}/library_report/report.md",
            caption="../report/library_report.rst",
            category="Library",
        ),
        html=report(
            f"{RESULTS}/library_report/report.html",
            caption="../report/library_report.rst",
            category="Library",
        ),
        png=report(
            f"{RESULTS}/library_report/r2.png",
            caption="../report/library_report.rst",
            category="Library",
        ),
        csv=report(
            f"{RESULTS}/library_report/cells.csv",
            caption="../report/library_report.rst",
            category="Library",
        ),
    log:
        f"{RESULTS}/logs/library_report.log",
    conda:
        ENV
    params:
        library=lambda w, input: input[0].removesuffix(".manifest.json"),
        out=lambda w, output: os.path.dirname(output.md),
    shell:
        "shotgun library report {params.library} --out {params.out} > {log} 2>&1"
