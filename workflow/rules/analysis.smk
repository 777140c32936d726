rule analyze_topology:
    """Network science of the final sparse layers of every run of one setting (dataset, model, width, density,
    protocol): ANP, power-law exponent, modularity, paths. One job per setting, so the analysis libraries
    load once for all its runs."""
    input:
        masks=setting_runs(RUN_MASKS),
    output:
        topology=setting_runs(f"{RESULTS}/runs/{RUN}/topology.json"),
    log:
        f"{LOGS}/analyze_topology/{SETTING}.log",
    benchmark:
        f"{RESULTS}/benchmarks/analyze_topology/{SETTING}.tsv"
    params:
        analysis=config["analysis"],
        job=job_params(),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/analyze_topology.py"


rule aggregate:
    """Mean ± std over seeds of every method in every setting, as CSV, Markdown and LaTeX."""
    input:
        metrics=runs(RUN_METRICS),
        topology=runs(f"{RESULTS}/runs/{RUN}/topology.json"),
    output:
        runs=f"{RESULTS}/tables/runs.csv",
        curves=f"{RESULTS}/tables/learning_curves.csv",
        anp=f"{RESULTS}/tables/anp.csv",
        summary=f"{RESULTS}/tables/summary.csv",
        summary_md=f"{RESULTS}/tables/summary.md",
        summary_tex=f"{RESULTS}/tables/summary.tex",
        summary_html=report(
            f"{RESULTS}/tables/summary.html",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "performance"},
        ),
        topology=f"{RESULTS}/tables/topology.csv",
        topology_md=f"{RESULTS}/tables/topology.md",
        topology_tex=f"{RESULTS}/tables/topology.tex",
        topology_html=report(
            f"{RESULTS}/tables/topology.html",
            caption="../report/topology.rst",
            category="Tables",
            labels={"table": "topology"},
        ),
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    params:
        methods=config["methods"],
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/aggregate.py"


rule claims:
    """The paper's claims tested on the grid's runs: paired differences over seeds, 95% intervals, verdicts."""
    input:
        runs=rules.aggregate.output.runs,
    output:
        csv=f"{RESULTS}/tables/claims.csv",
        md=f"{RESULTS}/tables/claims.md",
        html=report(
            f"{RESULTS}/tables/claims.html",
            caption="../report/claims.rst",
            category="Tables",
            labels={"table": "claims"},
        ),
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/claims.tsv"
    params:
        subject=CLAIMS["subject"],
        baselines=CLAIM_BASELINES,
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/claims.py"


rule reproduction:
    """The grid's accuracies and ANP beside the published tables' (cht/analysis/published): per cell Δ and
    a verdict within the combined standard errors, per dataset Kendall's τ of the methods' orderings."""
    input:
        runs=rules.aggregate.output.runs,
    output:
        csv=f"{RESULTS}/tables/reproduction.csv",
        ranks=f"{RESULTS}/tables/reproduction_ranks.csv",
        md=f"{RESULTS}/tables/reproduction.md",
        html=report(
            f"{RESULTS}/tables/reproduction.html",
            caption="../report/reproduction.rst",
            category="Tables",
            labels={"table": "reproduction"},
        ),
        figure=report(
            f"{RESULTS}/figures/reproduction.png",
            caption="../report/reproduction.rst",
            category="Reproduction",
            labels={"figure": "published vs reproduced"},
        ),
        figure_pdf=f"{RESULTS}/figures/reproduction.pdf",
    log:
        f"{LOGS}/reproduction.log",
    benchmark:
        f"{RESULTS}/benchmarks/reproduction.tsv"
    params:
        job=job_params(),
    localrule: True
    conda:
        "../../envs/cht.yaml"
    script:
        "../scripts/reproduction.py"
