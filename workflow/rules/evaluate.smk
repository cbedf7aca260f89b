# Aggregation: every result JSON (one per dataset, class, method, variant, seed) into tables.


rule aggregate:
    input:
        results=method_results(),
    output:
        table="results/tables/image_auroc.csv",
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    localrule: True
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        out_dir=lambda wc, output: os.path.dirname(output.table),
    shell:
        "{params.texad} aggregate --results {input.results} --out-dir {params.out_dir} > {log} 2>&1"
