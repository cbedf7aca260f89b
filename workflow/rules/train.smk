# Training: one model per (dataset, class, seed, settings); the file name carries the identity hash,
# so every method variant and ablation that needs the same model reuses it.


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
        mem_mb=lambda wc: 32000 if uses_gpu() else 4000,
        runtime=lambda wc: 1440 if uses_gpu() else 120,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        # resumable checkpoints live outside the declared output (Snakemake deletes a failed job's outputs)
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/ddpm-{wc.model_hash}",
        args=ddpm_train_args,
    shell:
        "{params.texad} train-diffusion --class-dir {params.class_dir} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --out {output.model} --ckpt-dir {params.ckpt_dir} "
        "--expect-hash {wildcards.model_hash} {params.args} --workers {threads} > {log} 2>&1"


# Method A's score model (VE SDE, NCSN++): the same trainer and entry point as the DDPM (`--kind score`).
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
        mem_mb=lambda wc: 32000 if uses_gpu() else 4000,
        runtime=lambda wc: 1440 if uses_gpu() else 120,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/score-{wc.model_hash}",
        settings=lambda wc: train_settings_json("method_a"),
        image_size=config["image_size"],
        device=config["device"],
        precision=config["precision"],
    shell:
        "{params.texad} train-diffusion --kind score --settings {params.settings} --class-dir {params.class_dir} "
        "--dataset {wildcards.dataset} --class {wildcards.cls} --seed {wildcards.seed} "
        "--image-size {params.image_size} --out {output.model} --ckpt-dir {params.ckpt_dir} "
        "--expect-hash {wildcards.model_hash} --device {params.device} --precision {params.precision} "
        "--workers {threads} > {log} 2>&1"


rule train_simplenet:
    input:
        marker=stage_marker,
        weights=simplenet_weights,
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
        mem_mb=lambda wc: 24000 if uses_gpu() else 8000,
        runtime=lambda wc: 240 if uses_gpu() else 120,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/simplenet-{wc.model_hash}",
        settings=lambda wc: train_settings_json("simplenet"),
        args=run_args,
    shell:
        "{params.texad} train-simplenet --class-dir {params.class_dir} --settings {params.settings} "
        "{params.args} --out {output.model} --ckpt-dir {params.ckpt_dir} "
        "--expect-hash {wildcards.model_hash} > {log} 2>&1"


rule train_draem:
    input:
        marker=stage_marker,
        sources=draem_source_inputs,
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
        mem_mb=lambda wc: 32000 if uses_gpu() else 8000,
        runtime=lambda wc: 1440 if uses_gpu() else 120,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/draem-{wc.model_hash}",
        settings=lambda wc: train_settings_json("draem"),
        sources=draem_source_args,
        args=run_args,
        # simulating anomalies is CPU work; on a GPU node the data loader needs its own processes
        workers=lambda wc, threads: threads if uses_gpu() else 0,
    shell:
        "{params.texad} train-draem --class-dir {params.class_dir} --settings {params.settings} "
        "{params.args} {params.sources} --workers {params.workers} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.model_hash} > {log} 2>&1"


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
