# Settings chosen without the test set (texad.methods.selection): `select` scores a method's candidates (its
# `select` block) on the class's validation split and chooses one; `choose` relabels that candidate's test-set run
# as `selected`, and the candidate that is best on the test set itself as the labelled `oracle` (each with its
# candidate's maps and fit state).


rule select:
    input:
        unpack(select_inputs),
    output:
        "results/selection/{dataset}/{cls}/{method}/seed{seed}.json",
    log:
        "results/logs/select/{dataset}/{cls}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/select/{dataset}/{cls}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(METHODS),
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(16000, 4000, 480, 60),
    params:
        texad=PYTHON_TEXAD,
        validation=lambda wc: PLAN.validation_dir(wc.dataset, wc.cls),
        settings=lambda wc: settings_arg(PLAN.select_settings(wc.method, wc.cls)),
        models=models_arg,
        class_dir=class_dir,
    shell:
        "{params.texad} select {wildcards.method} --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --validation-dir {params.validation} {params.models} "
        "--fit-states {input.fits} --fit-class-dir {params.class_dir} --out {output} > {log} 2>&1"


rule choose:
    input:
        unpack(choose_inputs),
    output:
        selected="results/runs/{dataset}/{cls}/{method}/selected/seed{seed}.json",
        selected_maps="results/maps/{dataset}/{cls}/{method}/selected/seed{seed}.npz",
        selected_fit="results/runs/{dataset}/{cls}/{method}/selected/seed{seed}.fit.npz",
        oracle="results/runs/{dataset}/{cls}/{method}/oracle/seed{seed}.json",
        oracle_maps="results/maps/{dataset}/{cls}/{method}/oracle/seed{seed}.npz",
        oracle_fit="results/runs/{dataset}/{cls}/{method}/oracle/seed{seed}.fit.npz",
    log:
        "results/logs/choose/{dataset}/{cls}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/choose/{dataset}/{cls}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(METHODS),
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
    shell:
        "{params.texad} choose --selection {input.selection} --results {input.results} --maps {input.maps} "
        "--selected {output.selected} --selected-maps {output.selected_maps} --oracle {output.oracle} "
        "--oracle-maps {output.oracle_maps} > {log} 2>&1"


# The three numbers per method and class: default, selected (chosen on validation) and oracle (best on the test set).
rule selection_table:
    input:
        results=lambda wc: PLAN.selection_table_results(),
        bootstrap=PLAN.bootstrap_outputs(),
    output:
        table="results/tables/selection.csv",
        markdown="results/tables/selection.md",
        latex="results/tables/selection.tex",
    log:
        "results/logs/selection_table.log",
    benchmark:
        "results/benchmarks/selection_table.tsv"
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
        "{params.texad} selection-table --results {input.results} --bootstrap {input.bootstrap} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule selection_figure:
    input:
        table="results/tables/selection.csv",
    output:
        png=report(
            "results/figures/selection.png",
            caption="../report/selection.rst",
            category="Figures",
            subcategory="Selection",
            labels={"figure": "default, selected and oracle"},
        ),
        pdf="results/figures/selection.pdf",
    log:
        "results/logs/selection_figure.log",
    benchmark:
        "results/benchmarks/selection_figure.tsv"
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
        "{params.texad} selection-figure --table {input.table} --out-png {output.png} "
        "--out-pdf {output.pdf} > {log} 2>&1"
