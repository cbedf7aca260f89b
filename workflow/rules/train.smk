# Training: one model per (dataset, class, seed, settings); the file name carries the identity hash, so every
# method variant and ablation that needs the same model reuses it. Resumable checkpoints live outside the
# declared output (Snakemake deletes a failed job's outputs); `--expect-hash` refuses settings that changed
# while the workflow was planned.


rule train_diffusion:
    input:
        marker=stage_marker,
    output:
        model="results/models/{dataset}/{cls}/seed{seed}/ddpm-{model_hash}.pt",
    log:
        "results/logs/train_diffusion/{dataset}/{cls}/seed{seed}-{model_hash}.log",
    benchmark:
        "results/benchmarks/train_diffusion/{dataset}/{cls}/seed{seed}-{model_hash}.tsv"
    conda:
        torch_env
    threads: compute_threads(4)
    resources:
        **torch_resources(32000, 4000, 1440, 120),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/ddpm-{wc.model_hash}",
        settings=train_settings("ddpm"),
    shell:
        "{params.texad} train ddpm --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --class-dir {params.class_dir} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.model_hash} --workers {threads} > {log} 2>&1"


# Method A's score model (VE SDE, NCSN++): the same diffusion trainer, on the DSM objective.
rule train_score_model:
    input:
        marker=stage_marker,
    output:
        model="results/models/{dataset}/{cls}/seed{seed}/score-{model_hash}.pt",
    log:
        "results/logs/train_score_model/{dataset}/{cls}/seed{seed}-{model_hash}.log",
    benchmark:
        "results/benchmarks/train_score_model/{dataset}/{cls}/seed{seed}-{model_hash}.tsv"
    conda:
        torch_env
    threads: compute_threads(4)
    resources:
        **torch_resources(32000, 4000, 1440, 120),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/score-{wc.model_hash}",
        settings=train_settings("score"),
    shell:
        "{params.texad} train score --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --class-dir {params.class_dir} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.model_hash} --workers {threads} > {log} 2>&1"


rule train_simplenet:
    input:
        marker=stage_marker,
        weights=train_weights("simplenet", "simplenet"),
    output:
        model="results/models/{dataset}/{cls}/seed{seed}/simplenet-{model_hash}.pt",
    log:
        "results/logs/train_simplenet/{dataset}/{cls}/seed{seed}-{model_hash}.log",
    benchmark:
        "results/benchmarks/train_simplenet/{dataset}/{cls}/seed{seed}-{model_hash}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(24000, 8000, 240, 120),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/simplenet-{wc.model_hash}",
        settings=train_settings("simplenet"),
    shell:
        "{params.texad} train simplenet --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --class-dir {params.class_dir} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.model_hash} > {log} 2>&1"


rule train_draem:
    input:
        marker=stage_marker,
        sources=draem_sources,
    output:
        model="results/models/{dataset}/{cls}/seed{seed}/draem-{model_hash}.pt",
    log:
        "results/logs/train_draem/{dataset}/{cls}/seed{seed}-{model_hash}.log",
    benchmark:
        "results/benchmarks/train_draem/{dataset}/{cls}/seed{seed}-{model_hash}.tsv"
    conda:
        torch_env
    threads: compute_threads(4)
    resources:
        **torch_resources(32000, 8000, 1440, 120),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/draem-{wc.model_hash}",
        settings=train_settings("draem"),
        sources=draem_source_args,
        # simulating anomalies is CPU work; on a GPU node the data loader needs its own processes
        workers=lambda wc, threads: threads if uses_gpu() else 0,
    shell:
        "{params.texad} train draem --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --class-dir {params.class_dir} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.model_hash} {params.sources} "
        "--workers {params.workers} > {log} 2>&1"


# DDAD's feature-extractor domain adaptation: one per (class, DDPM, adaptation settings), for the classes
# whose feature_adaptation.epochs is not 0; every Method B variant of that class reuses it.
rule adapt_features:
    input:
        model=lambda wc: PLAN.model_path("ddpm", wc.dataset, wc.cls, wc.seed),
        marker=stage_marker,
        weights=train_weights("method_b", "features"),
    output:
        features="results/models/{dataset}/{cls}/seed{seed}/features-{backbone}-{fe_hash}.pt",
    log:
        "results/logs/adapt_features/{dataset}/{cls}/seed{seed}-{backbone}-{fe_hash}.log",
    benchmark:
        "results/benchmarks/adapt_features/{dataset}/{cls}/seed{seed}-{backbone}-{fe_hash}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(32000, 8000, 240, 120),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/features-{wc.backbone}-{wc.fe_hash}",
        settings=train_settings("features"),
    shell:
        "{params.texad} train features --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --class-dir {params.class_dir} --model {input.model} "
        "--out {output.features} --ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.fe_hash} "
        "--workers {threads} > {log} 2>&1"


# Pretrained torchvision weights are staged once, on the head node, into the checksum-verified cache
# under results/ (TORCH_HOME layout), so compute nodes never download.
rule stage_weights:
    output:
        weights=f"{config['backbone']['cache']}/hub/checkpoints/{{backbone}}-{{prefix}}.pth",
    log:
        "results/logs/stage_weights/{backbone}-{prefix}.log",
    benchmark:
        "results/benchmarks/stage_weights/{backbone}-{prefix}.tsv"
    localrule: True
    conda:
        "../../envs/texad-cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        texad=PYTHON_TEXAD,
        cache=lambda wc, output: Path(output.weights).parents[2],
    shell:
        "{params.texad} stage-weights {wildcards.backbone} --cache {params.cache} > {log} 2>&1"
