rule train:
    """Train one model; metrics.json is written last. The run's checkpoint.pt is deliberately not an
    output, so an interrupted job keeps it and its rerun resumes from the last finished epoch."""
    input:
        manifest=rules.download_dataset.output.manifest,
    output:
        masks=f"{RESULTS}/runs/{RUN}/masks.pt",
        initial_masks=f"{RESULTS}/runs/{RUN}/initial_masks.pt",
        metrics=f"{RESULTS}/runs/{RUN}/metrics.json",
    log:
        f"{LOGS}/train/{RUN}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{RUN}.tsv"
    params:
        settings=lambda wildcards: train_settings(dict(wildcards.items())),
        job=job_params(),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/train.py"
