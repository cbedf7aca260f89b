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
            labels={"dataset": "{dataset}", "class": "{cls}"},
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
        class_dir=class_dir,
    shell:
        "{params.texad} contact-sheet --class-dir {params.class_dir} --out {output} "
        "--title '{wildcards.dataset} / {wildcards.cls}' > {log} 2>&1"
