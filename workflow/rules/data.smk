# Data stage: generate the synthetic set, stage downloads (head node only), check every class.


rule synth_class:
    output:
        marker="resources/datasets/synthetic/{cls}.manifest.json",
    log:
        "results/logs/synth/{cls}.log",
    benchmark:
        "results/benchmarks/synth/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        texad=PYTHON_TEXAD,
        root=lambda wc, output: os.path.dirname(output.marker),
        settings=lambda wc: PLAN.synth_args(),
    shell:
        "{params.texad} synth --class {wildcards.cls} --out {params.root} --marker {output.marker} "
        "{params.settings} > {log} 2>&1"


# A user's class folder (datasets.folder), read in place: checked, and a view of symbolic links built in the MVTec
# layout. The fingerprint (path, size and mtime of every file) is a parameter, so a changed folder reruns this job
# and makes everything built from the class stale.
rule index_folder_class:
    output:
        marker="resources/datasets/{dataset}/{cls}.manifest.json",
    log:
        "results/logs/index_folder/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/index_folder/{dataset}/{cls}.tsv"
    wildcard_constraints:
        dataset="|".join(PLAN.folders) or "(?!)",
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        texad=PYTHON_TEXAD,
        view=staged_class_dir,
        args=lambda wc: PLAN.folder_index_args(wc.dataset, wc.cls),
        fingerprint=lambda wc: PLAN.folder_fingerprint(wc.dataset, wc.cls),
    shell:
        "{params.texad} index-folder {params.args} --view {params.view} --marker {output.marker} > {log} 2>&1"


# Downloads run on the head node (localrule): cluster compute nodes often have no internet. Partial
# archives live in resources/downloads, outside the declared output, so a killed download resumes.
rule stage_dataset:
    output:
        marker="resources/datasets/{dataset}.staged.json",
    log:
        "results/logs/stage/{dataset}.log",
    benchmark:
        "results/benchmarks/stage/{dataset}.tsv"
    localrule: True
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        texad=PYTHON_TEXAD,
        root=lambda wc: f"resources/datasets/{wc.dataset}",
        cache="resources/downloads",
        args=lambda wc: PLAN.download_args(wc.dataset),
    shell:
        "{params.texad} download {wildcards.dataset} --root {params.root} --cache {params.cache} "
        "--marker {output.marker} {params.args} > {log} 2>&1"


rule check_class:
    input:
        marker=staged_marker,
    output:
        layout="results/data/{dataset}/{cls}/layout.json",
    log:
        "results/logs/check_class/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/check_class/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        texad=PYTHON_TEXAD,
        class_dir=staged_class_dir,
        manifest=lambda wc, input: (
            f"--manifest {input.marker}"
            if input.marker.endswith(".manifest.json")
            else ""
        ),
    shell:
        "{params.texad} check-class --dataset {wildcards.dataset} --class-dir {params.class_dir} "
        "{params.manifest} --out {output.layout} > {log} 2>&1"


# validation.holdout > 0: the view of a class that every model trains on and every run reads (train/good without the
# held-out images; test and ground_truth the class's own). Its settings are the held-out share alone, so a change to
# the validation anomalies retrains nothing.
rule training_view:
    input:
        marker=staged_marker,
    output:
        marker="results/splits/{dataset}/{cls}/view.json",
    log:
        "results/logs/training_view/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/training_view/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        texad=PYTHON_TEXAD,
        class_dir=staged_class_dir,
        view=lambda wc, output: os.path.dirname(output.marker),
        settings=lambda wc: settings_arg(PLAN.training_view_settings()),
    shell:
        "{params.texad} training-view --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --class-dir {params.class_dir} --view {params.view} --marker {output.marker} "
        "> {log} 2>&1"


# The validation split of a class, from normal images only: the held-out training images (with holdout 0 the training
# images themselves) and the same images with synthetic anomalies and exact masks, in the MVTec layout; split.json last.
rule validation_split:
    input:
        marker=staged_marker,
        sources=lambda wc: PLAN.validation_sources(wc.dataset, wc.cls)[0],
    output:
        marker="results/validation/{dataset}/{cls}/split.json",
    log:
        "results/logs/validation_split/{dataset}/{cls}.log",
    benchmark:
        "results/benchmarks/validation_split/{dataset}/{cls}.tsv"
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        texad=PYTHON_TEXAD,
        class_dir=staged_class_dir,
        out=lambda wc, output: os.path.dirname(output.marker),
        settings=lambda wc: settings_arg(PLAN.validation_settings()),
        sources=lambda wc: PLAN.validation_sources(wc.dataset, wc.cls)[1],
    shell:
        "{params.texad} validation-split --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --class-dir {params.class_dir} --out {params.out} --marker {output.marker} "
        "{params.sources} > {log} 2>&1"
