if not GROUPED:

    rule train:
        """Train one model; metrics.json is written last. The run's checkpoint.pt is deliberately not an
        output, so an interrupted job keeps it and its rerun resumes from the last finished epoch."""
        input:
            manifest=rules.download_dataset.output.manifest,
        output:
            masks=RUN_MASKS,
            initial_masks=RUN_INITIAL_MASKS,
            metrics=RUN_METRICS,
        log:
            f"{LOGS}/train/{RUN}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train/{RUN}.tsv"
        params:
            settings=lambda wildcards: train_settings(config, dict(wildcards.items())),
            job=job_params(),
        threads: 1
        resources:
            mem_mb=4000,
            runtime=120,
        conda:
            "../../envs/cht.yaml"
        script:
            "../scripts/train.py"

else:
    # One rule per part of a setting's group (one part unless group_size splits it): a rule's outputs are
    # fixed patterns, and each part produces the files of its own (method, seed) members.
    for part, members in enumerate(group_parts(config)):

        rule:
            """Train a part of a setting's runs together in one process (cht.grouped); every member writes
            its own masks.pt and metrics.json. The group's checkpoint is not an output, so an interrupted job
            keeps it and its rerun resumes every member from the last finished epoch."""
            name:
                group_rule_name(part)
            input:
                manifest=rules.download_dataset.output.manifest,
            output:
                masks=[member_path(RUN_MASKS, method, seed) for method, seed in members],
                initial_masks=[member_path(RUN_INITIAL_MASKS, method, seed) for method, seed in members],
                metrics=[member_path(RUN_METRICS, method, seed) for method, seed in members],
            log:
                f"{LOGS}/train_group/{SETTING}/part{part + 1}.log",
            benchmark:
                f"{RESULTS}/benchmarks/train_group/{SETTING}/part{part + 1}.tsv"
            params:
                settings=group_settings(members),
                checkpoint=f"{RESULTS}/groups/{SETTING}/part{part + 1}/group_checkpoint.pt",
                compile=config["group_compile"],
                job=job_params(),
            threads: 1
            resources:
                mem_mb=8000,
                runtime=1440,
            conda:
                "../../envs/cht.yaml"
            script:
                "../scripts/train_group.py"
