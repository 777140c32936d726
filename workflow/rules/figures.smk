rule learning_figures:
    """Learning curves and area across epochs of every method, one panel per dataset."""
    input:
        curves=rules.aggregate.output.curves,
    output:
        learning_curves=figure(f"{FIGURES}/{ACROSS_DATASETS}/learning_curves", "learning_curves", PANEL),
        aae_bars=figure(f"{FIGURES}/{ACROSS_DATASETS}/aae_bars", "aae_bars", PANEL),
    log:
        f"{LOGS}/learning_figures/{ACROSS_DATASETS}.log",
    benchmark:
        f"{RESULTS}/benchmarks/learning_figures/{ACROSS_DATASETS}.tsv"
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


rule anp_epochs_figure:
    """Active-neuron proportion over epochs, from initialisation (epoch 0) on, of the evolving methods."""
    input:
        anp=rules.aggregate.output.anp,
    output:
        anp=figure(f"{FIGURES}/{SETTING}/anp_over_epochs", "anp_over_epochs", DATASET_PANEL),
    log:
        f"{LOGS}/anp_epochs_figure/{SETTING}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anp_epochs_figure/{SETTING}.tsv"
    params:
        captions=CAPTIONS,
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/anp_figure.py"


rule degree_initial_final_figures:
    """Degree distribution at initialisation and after training of every sparse method (first seed)."""
    input:
        unpack(lambda wildcards: first_seed_masks(wildcards, initial=True)),
    output:
        degrees=[path for method in SPARSE_METHODS
                 for path in figure(f"{FIGURES}/{SETTING}/degree_initial_final_{method}",
                                    "degree_initial_final", DATASET_PANEL, method=method)],
    log:
        f"{LOGS}/degree_initial_final_figures/{SETTING}.log",
    benchmark:
        f"{RESULTS}/benchmarks/degree_initial_final_figures/{SETTING}.tsv"
    params:
        methods=SPARSE_METHODS,
        captions=CAPTIONS,
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/degree_figures.py"


rule network_figures:
    """The subject's (CHT's) trained network next to the contrast method's (SET's), first seed: coalescent
    hyperbolic embedding (initial and trained) and the layered community drawing."""
    input:
        unpack(lambda wildcards: first_seed_masks(wildcards, NETWORK_METHODS, initial=True)),
    output:
        embedding=figure(f"{FIGURES}/{SETTING}/hyperbolic_embedding", "hyperbolic_embedding_methods",
                         DATASET_PANEL),
        communities=[path for method in NETWORK_METHODS
                     for path in figure(f"{FIGURES}/{SETTING}/layered_communities_{method}",
                                        "layered_communities", DATASET_PANEL, method=method)],
    log:
        f"{LOGS}/network_figures/{SETTING}.log",
    benchmark:
        f"{RESULTS}/benchmarks/network_figures/{SETTING}.tsv"
    params:
        methods=NETWORK_METHODS,
        seed=config["analysis"]["seed"],
        captions=CAPTIONS,
        job=job_params(),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/network_figures.py"
