rule download_dataset:
    """Fetch and verify a dataset (checksums), then record where it is and its checksum."""
    output:
        manifest=f"{RESULTS}/data/{{dataset}}.json",
    log:
        f"{LOGS}/download_dataset/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_dataset/{{dataset}}.tsv"
    params:
        data_root=config["data_root"],
        sources=config["data_sources"],
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/download_dataset.py"
