# Methods: each run (dataset, class, method, variant, seed) writes one result JSON and its maps.


rule method_b:
    input:
        model=ddpm_model,
        marker=stage_marker,
        weights=method_b_weights,
    output:
        result="results/runs/{dataset}/{cls}/method_b/default/seed{seed}.json",
        maps="results/maps/{dataset}/{cls}/method_b/default/seed{seed}.npz",
    log:
        "results/logs/method_b/{dataset}/{cls}/default/seed{seed}.log",
    benchmark:
        "results/benchmarks/method_b/{dataset}/{cls}/default/seed{seed}.tsv"
    conda:
        torch_env
    threads: 2
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
