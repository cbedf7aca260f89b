# Figures for the Snakemake HTML report.


rule contact_sheet:
    input:
        layout="results/data/{dataset}/{cls}/layout.json",
    output:
        report(
            "results/data/{dataset}/{cls}/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="Data",
            subcategory="{dataset}",
            labels={"class": "{dataset} / {cls}"},
        ),
    log:
        "results/logs/contact_sheet/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/contact_sheet/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        class_dir=staged_class_dir,
        title=figure_title,
    shell:
        "{params.texad} contact-sheet --class-dir {params.class_dir} --out {output} "
        "--title {params.title} > {log} 2>&1"


# The validation split of a class: its held-out normal images, then each kind of synthetic anomaly with its mask.
rule validation_sheet:
    input:
        split="results/validation/{dataset}/{cls}/split.json",
    output:
        report(
            "results/data/{dataset}/{cls}/validation_sheet.png",
            caption="../report/validation_sheet.rst",
            category="Data",
            subcategory="{dataset} validation",
            labels={"class": "{dataset} / {cls}"},
        ),
    log:
        "results/logs/validation_sheet/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/validation_sheet/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        folder=lambda wc, input: os.path.dirname(input.split),
        title=lambda wc: shlex.quote(
            f"{wc.dataset} / {PLAN.class_title(wc.dataset, wc.cls)}: validation split"
        ),
    shell:
        "{params.texad} contact-sheet --class-dir {params.folder} --normals test --out {output} "
        "--title {params.title} > {log} 2>&1"


# Every table as an HTML page: the report shows HTML in its main panel (CSV would only be a download).
rule table_html:
    input:
        markdown="results/tables/{table}.md",
    output:
        report(
            "results/report/tables/{group}/{table}.html",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{group}",
            labels={"table": "{table}"},
        ),
    log:
        "results/logs/table_html/{group}/{table}.log",
    benchmark:
        "results/benchmarks/table_html/{group}/{table}.tsv"
    wildcard_constraints:
        group="benchmark|paper|ablation|claims|selection",
    localrule: True
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        texad=PYTHON_TEXAD,
    shell:
        "{params.texad} table-html --markdown {input.markdown} --out {output} > {log} 2>&1"


# Figure 1 of the papers: original, reconstruction, ground truth and anomaly map of both diffusion methods.
rule figure_grid:
    input:
        maps=lambda wc: PLAN.default_maps(wc.dataset, wc.cls, DIFFUSION_METHODS),
    output:
        png=report(
            "results/figures/{dataset}/{cls}/figure1.png",
            caption="../report/figure1.rst",
            category="Figures",
            subcategory="Reconstructions (Figure 1)",
            labels={"class": "{dataset} / {cls}"},
        ),
        pdf="results/figures/{dataset}/{cls}/figure1.pdf",
    log:
        "results/logs/figure_grid/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/figure_grid/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        labels=lambda wc, input: " ".join(Path(p).parts[-3] for p in input.maps),
        title=figure_title,
    shell:
        "{params.texad} figure-grid --maps {input.maps} --labels {params.labels} "
        "--out-png {output.png} --out-pdf {output.pdf} --title {params.title} "
        "> {log} 2>&1"


# Image- and pixel-level ROC curves of every method's default variant on one class.
rule roc_curves:
    input:
        maps=lambda wc: PLAN.default_maps(wc.dataset, wc.cls, METHODS),
    output:
        png=report(
            "results/figures/{dataset}/{cls}/roc.png",
            caption="../report/roc.rst",
            category="Figures",
            subcategory="ROC curves",
            labels={"class": "{dataset} / {cls}"},
        ),
        pdf="results/figures/{dataset}/{cls}/roc.pdf",
    log:
        "results/logs/roc_curves/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/roc_curves/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        labels=lambda wc, input: " ".join(Path(p).parts[-3] for p in input.maps),
        title=figure_title,
    shell:
        "{params.texad} roc-curves --maps {input.maps} --labels {params.labels} "
        "--out-png {output.png} --out-pdf {output.pdf} --title {params.title} "
        "> {log} 2>&1"


# AUROC against the number of T scales (Method A) or the guidance strengths (Method B).
rule ablation_curves:
    input:
        results=lambda wc: PLAN.ablation_results(wc.method),
    output:
        png=report(
            "results/figures/ablation_{method}.png",
            caption="../report/ablation_curves.rst",
            category="Figures",
            subcategory="Ablations",
            labels={"method": "{method}"},
        ),
        pdf="results/figures/ablation_{method}.pdf",
    log:
        "results/logs/ablation_curves/{method}.log",
    benchmark:
        "results/benchmarks/ablation_curves/{method}.tsv"
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
    shell:
        "{params.texad} ablation-curves --method {wildcards.method} --results {input.results} "
        "--out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"


# Cost against accuracy: every method and ablation point.
rule speed_accuracy:
    input:
        results=lambda wc: sorted(
            set(
                PLAN.method_results()
                + sum((PLAN.ablation_results(m) for m in ABLATED_METHODS), [])
            )
        ),
    output:
        png=report(
            "results/figures/speed_accuracy.png",
            caption="../report/speed_accuracy.rst",
            category="Figures",
            subcategory="Speed vs accuracy",
            labels={"figure": "all methods and ablation points"},
        ),
        pdf="results/figures/speed_accuracy.pdf",
    log:
        "results/logs/speed_accuracy.log",
    benchmark:
        "results/benchmarks/speed_accuracy.tsv"
    localrule: True
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
    shell:
        "{params.texad} speed-accuracy --results {input.results} "
        "--out-png {output.png} --out-pdf {output.pdf} > {log} 2>&1"
