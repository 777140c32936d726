rule learning_figures:
    """Learning curves and area across epochs of every method, one panel per dataset."""
    input:
        curves=rules.aggregate.output.curves,
    output:
        learning_curves=figure(f"{FIGURES}/{{model}}-dim{{dim}}/density{{density}}/learning_curves",
                               "learning_curves", PANEL),
        aae_bars=figure(f"{FIGURES}/{{model}}-dim{{dim}}/density{{density}}/aae_bars",
                        "aae_bars", PANEL),
    log:
        f"{LOGS}/learning_figures/{{model}}-dim{{dim}}/density{{density}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/learning_figures/{{model}}-dim{{dim}}/density{{density}}.tsv"
    params:
        captions=CAPTIONS,
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/learning_figures.py"


rule anp_figure:
    """Active-neuron proportion over the topology-evolution steps of the evolving methods."""
    input:
        anp=rules.aggregate.output.anp,
    output:
        anp=figure(f"{FIGURES}/{SETTING}/anp_over_steps", "anp_over_steps", DATASET_PANEL),
    log:
        f"{LOGS}/anp_figure/{SETTING}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anp_figure/{SETTING}.tsv"
    params:
        captions=CAPTIONS,
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/anp_figure.py"


rule degree_figures:
    """Degree distribution of the final topology of every sparse method (first seed)."""
    input:
        unpack(first_seed_masks),
    output:
        degrees=[path for method in SPARSE_METHODS
                 for path in figure(f"{FIGURES}/{SETTING}/degree_distribution_{method}",
                                    "degree_distribution", DATASET_PANEL, method=method)],
    log:
        f"{LOGS}/degree_figures/{SETTING}.log",
    benchmark:
        f"{RESULTS}/benchmarks/degree_figures/{SETTING}.tsv"
    params:
        methods=SPARSE_METHODS,
        captions=CAPTIONS,
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/degree_figures.py"
