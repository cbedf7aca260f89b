# Aggregation: every result JSON (one per dataset, class, method, variant, seed) into tables.


rule aggregate:
    input:
        results=PLAN.method_results(),
        bootstrap=PLAN.bootstrap_outputs(),
    output:
        table="results/tables/image_auroc.csv",
        markdown=expand("results/tables/{metric}.md", metric=METRIC_TABLES),
        intervals="results/tables/intervals.csv",
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
        metrics=" ".join(METRIC_TABLES),
        titles=PLAN.class_titles_arg(),
    shell:
        "{params.texad} aggregate --results {input.results} --bootstrap {input.bootstrap} "
        "--out-dir {params.out_dir} --metrics {params.metrics} {params.titles} > {log} 2>&1"


# One method's ablation (Method A: every T-scales point, the other measures, the shared DDPM, and the full
# chain as the reference; Method B: every guidance point against the default): network evaluations, s/image,
# speed-up and scores per variant.
rule ablation_table:
    input:
        results=lambda wc: PLAN.ablation_results(wc.method),
        bootstrap=PLAN.bootstrap_outputs(),
    output:
        table="results/tables/ablation_{method}.csv",
        markdown="results/tables/ablation_{method}.md",
        latex="results/tables/ablation_{method}.tex",
    log:
        "results/logs/ablation_table/{method}.log",
    benchmark:
        "results/benchmarks/ablation_table/{method}.tsv"
    wildcard_constraints:
        method="method_a|method_b",
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
        "{params.texad} ablation-table --method {wildcards.method} --results {input.results} "
        "--bootstrap {input.bootstrap} --out-dir {params.out_dir} > {log} 2>&1"


# The paper tables: reproduced numbers beside the published ones (workflow/report/published.yaml), with the
# difference; one rule per table so that a config without a method plans no table that needs it.
rule paper_table:
    input:
        results=lambda wc: PLAN.paper_table_results(wc.table),
        bootstrap=PLAN.bootstrap_outputs(),
        published=PUBLISHED,
    output:
        table="results/tables/{table}.csv",
        markdown="results/tables/{table}.md",
        latex="results/tables/{table}.tex",
    log:
        "results/logs/paper_table/{table}.log",
    benchmark:
        "results/benchmarks/paper_table/{table}.tsv"
    wildcard_constraints:
        table="|".join(PAPER_TABLES),
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
        titles=PLAN.class_titles_arg(),
    shell:
        "{params.texad} paper-tables --results {input.results} --bootstrap {input.bootstrap} "
        "--published {input.published} --out-dir {params.out_dir} --tables {wildcards.table} "
        "{params.titles} > {log} 2>&1"


# The deployment threshold of one run (image and pixel), chosen on its normal test images at evaluation.threshold's
# false-positive rate, or at F1-max on the test set (labelled optimistic); `texad predict --model <result>` uses it.
rule threshold:
    input:
        result="results/runs/{dataset}/{cls}/{method}/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/{method}/{variant}/seed{seed}.npz",
    output:
        "results/runs/{dataset}/{cls}/{method}/{variant}/seed{seed}.threshold.json",
    log:
        "results/logs/threshold/{dataset}/{cls}/{method}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/threshold/{dataset}/{cls}/{method}/{variant}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(METHODS),
    localrule: True
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        settings=settings_arg(PLAN.threshold_settings()),
    shell:
        "{params.texad} threshold --result {input.result} --maps {input.maps} --settings {params.settings} "
        "--out {output} > {log} 2>&1"


# One class's bootstrap: every run of the class resampled on the same test images (evaluation.bootstrap), so the
# tables get intervals and two runs' difference is a paired comparison.
rule bootstrap:
    input:
        unpack(class_runs),
    output:
        "results/uncertainty/{dataset}/{cls}.npz",
    log:
        "results/logs/bootstrap/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/bootstrap/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        texad=PYTHON_TEXAD,
        settings=settings_arg(PLAN.bootstrap_settings()),
    shell:
        "{params.texad} bootstrap --results {input.results} --maps {input.maps} "
        "--settings {params.settings} --out {output} > {log} 2>&1"


# Each paper's claim (workflow/report/claims.yaml) held against the runs: paired differences over the classes where
# both sides ran, their intervals, DeLong beside them, and a computed verdict.
rule claims:
    input:
        bootstrap=PLAN.bootstrap_outputs(),
        claims=CLAIMS,
        published=PUBLISHED,
    output:
        table="results/tables/claims.csv",
        markdown="results/tables/claims.md",
        latex="results/tables/claims.tex",
    log:
        "results/logs/claims.log",
    benchmark:
        "results/benchmarks/claims.tsv"
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
        "{params.texad} claims --bootstrap {input.bootstrap} --claims {input.claims} "
        "--published {input.published} --out-dir {params.out_dir} > {log} 2>&1"
