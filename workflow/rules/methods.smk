# Method runs: each (dataset, class, method, variant, seed) writes one result JSON, its maps and, beside the
# result, its fit state (`<stem>.fit.npz`, what the run computed from training images; texad run names it after the
# result). `default` and every ablation point of a method read the same trained models; {variant} names the point
# (the method's `variants`, texad.methods.<method>.ablation).


rule method_a:
    input:
        unpack(run_inputs("method_a")),
    output:
        result="results/runs/{dataset}/{cls}/method_a/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/method_a/{variant}/seed{seed}.npz",
        fit="results/runs/{dataset}/{cls}/method_a/{variant}/seed{seed}.fit.npz",
    log:
        "results/logs/method_a/{dataset}/{cls}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/method_a/{dataset}/{cls}/{variant}/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(16000, 4000, 480, 60),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=run_settings("method_a"),
        models=models_arg,
    shell:
        "{params.texad} run method_a --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --variant {wildcards.variant} "
        "--class-dir {params.class_dir} {params.models} --out {output.result} --maps {output.maps} > {log} 2>&1"


rule method_b:
    input:
        unpack(run_inputs("method_b")),
    output:
        result="results/runs/{dataset}/{cls}/method_b/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/method_b/{variant}/seed{seed}.npz",
        fit="results/runs/{dataset}/{cls}/method_b/{variant}/seed{seed}.fit.npz",
    log:
        "results/logs/method_b/{dataset}/{cls}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/method_b/{dataset}/{cls}/{variant}/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(16000, 4000, 240, 60),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=run_settings("method_b"),
        models=models_arg,
    shell:
        "{params.texad} run method_b --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --variant {wildcards.variant} "
        "--class-dir {params.class_dir} {params.models} --out {output.result} --maps {output.maps} > {log} 2>&1"


rule simplenet:
    input:
        unpack(run_inputs("simplenet")),
    output:
        result="results/runs/{dataset}/{cls}/simplenet/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/simplenet/{variant}/seed{seed}.npz",
        fit="results/runs/{dataset}/{cls}/simplenet/{variant}/seed{seed}.fit.npz",
    log:
        "results/logs/simplenet/{dataset}/{cls}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/simplenet/{dataset}/{cls}/{variant}/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(16000, 4000, 60, 60),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=run_settings("simplenet"),
        models=models_arg,
    shell:
        "{params.texad} run simplenet --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --variant {wildcards.variant} "
        "--class-dir {params.class_dir} {params.models} --out {output.result} --maps {output.maps} > {log} 2>&1"


rule draem:
    input:
        unpack(run_inputs("draem")),
    output:
        result="results/runs/{dataset}/{cls}/draem/{variant}/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/draem/{variant}/seed{seed}.npz",
        fit="results/runs/{dataset}/{cls}/draem/{variant}/seed{seed}.fit.npz",
    log:
        "results/logs/draem/{dataset}/{cls}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/draem/{dataset}/{cls}/{variant}/seed{seed}.tsv"
    conda:
        torch_env
    threads: compute_threads(2)
    resources:
        **torch_resources(16000, 4000, 60, 60),
    params:
        texad=PYTHON_TEXAD,
        class_dir=class_dir,
        settings=run_settings("draem"),
        models=models_arg,
    shell:
        "{params.texad} run draem --settings {params.settings} --dataset {wildcards.dataset} "
        "--class {wildcards.cls} --seed {wildcards.seed} --variant {wildcards.variant} "
        "--class-dir {params.class_dir} {params.models} --out {output.result} --maps {output.maps} > {log} 2>&1"
