# Methods: each run (dataset, class, method, variant, seed) writes one result JSON and its maps.


# Method A: `default` and every ablation point read the same trained model (or Method B's DDPM for the
# `shared_ddpm` point); {variant} names the point (see texad.methods.score_tscales.run.ablation_variants).
rule method_a:
    input:
        model=method_a_model,
        marker=stage_marker,
    output:
        result="results/runs/{dataset}/{cls}/method_a/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/method_a/{variant}/seed{seed}.npz",
    log:
        "results/logs/method_a/{dataset}/{cls}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/method_a/{dataset}/{cls}/{variant}/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        mem_mb=lambda wc: 16000 if uses_gpu() else 4000,
        runtime=lambda wc: 480 if uses_gpu() else 60,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=method_a_run_args,
        batch_size=lambda wc: config["methods"]["method_a"]["inference"]["batch_size"],
        speed=method_a_speed_batches,
        args=eval_args,
    shell:
        "{params.texad} method-a --model {input.model} --class-dir {params.class_dir} --variant {wildcards.variant} "
        "{params.settings} {params.args} --batch-size {params.batch_size} {params.speed} "
        "--out {output.result} --maps {output.maps} > {log} 2>&1"


# Method B: `default` and every guidance point of the ablation (w, s, blur sigma, start step) read the same
# DDPM and adapted extractor; {variant} names the point (texad.methods.conditioned_blur.ablation).
rule method_b:
    input:
        model=ddpm_model,
        marker=stage_marker,
        weights=method_b_weights,
        features=adapted_features,
    output:
        result="results/runs/{dataset}/{cls}/method_b/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/method_b/{variant}/seed{seed}.npz",
    log:
        "results/logs/method_b/{dataset}/{cls}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/method_b/{dataset}/{cls}/{variant}/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        mem_mb=lambda wc: 16000 if uses_gpu() else 4000,
        runtime=lambda wc: 240 if uses_gpu() else 60,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        args=method_b_args,
    shell:
        "{params.texad} method-b --model {input.model} --class-dir {params.class_dir} "
        "--dataset {wildcards.dataset} --class {wildcards.cls} --seed {wildcards.seed} "
        "--out {output.result} --maps {output.maps} {params.args} > {log} 2>&1"


# DDAD's feature-extractor domain adaptation: one per (class, DDPM, adaptation settings), for the classes
# whose feature_adaptation.epochs is not 0; every Method B variant of that class reuses it.
rule adapt_features:
    input:
        model=ddpm_model,
        marker=stage_marker,
        weights=method_b_weights,
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
        mem_mb=lambda wc: 32000 if uses_gpu() else 8000,
        runtime=lambda wc: 240 if uses_gpu() else 120,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        ckpt_dir=lambda wc: f"resources/checkpoints/{wc.dataset}/{wc.cls}/seed{wc.seed}/features-{wc.backbone}-{wc.fe_hash}",
        args=adaptation_args,
    shell:
        "{params.texad} adapt-features --model {input.model} --class-dir {params.class_dir} "
        "--out {output.features} --ckpt-dir {params.ckpt_dir} --expect-hash {wildcards.fe_hash} "
        "--backbone {wildcards.backbone} {params.args} --threads {threads} > {log} 2>&1"


rule simplenet:
    input:
        model=simplenet_model,
        marker=stage_marker,
        weights=simplenet_weights,
    output:
        result="results/runs/{dataset}/{cls}/simplenet/default/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/simplenet/default/seed{seed}.npz",
    log:
        "results/logs/simplenet/{dataset}/{cls}/default/seed{seed}.log",
    benchmark:
        "results/benchmarks/simplenet/{dataset}/{cls}/default/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        mem_mb=lambda wc: 16000 if uses_gpu() else 4000,
        runtime=60,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=lambda wc: settings_json("simplenet"),
        args=eval_args,
    shell:
        "{params.texad} simplenet --model {input.model} --class-dir {params.class_dir} "
        "--settings {params.settings} {params.args} --out {output.result} --maps {output.maps} > {log} 2>&1"


rule draem:
    input:
        model=draem_model,
        marker=stage_marker,
    output:
        result="results/runs/{dataset}/{cls}/draem/default/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/draem/default/seed{seed}.npz",
    log:
        "results/logs/draem/{dataset}/{cls}/default/seed{seed}.log",
    benchmark:
        "results/benchmarks/draem/{dataset}/{cls}/default/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        mem_mb=lambda wc: 16000 if uses_gpu() else 4000,
        runtime=60,
        gpu=lambda wc: 1 if uses_gpu() else 0,
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=lambda wc: settings_json("draem"),
        args=eval_args,
    shell:
        "{params.texad} draem --model {input.model} --class-dir {params.class_dir} "
        "--settings {params.settings} {params.args} --out {output.result} --maps {output.maps} > {log} 2>&1"
