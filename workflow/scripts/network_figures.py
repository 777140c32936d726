"""The claims' subject (CHT) next to the contrast method (SET) in one setting, first seed: coalescent
hyperbolic embedding of the initial and trained networks, and the layered community drawing."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.figures import plot_hyperbolic_embedding_methods, plot_layered_communities
from cht.io import load_tensors

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        methods, seed = snakemake.params.methods, snakemake.params.seed
        masks = {method: (load_tensors(snakemake.input[f"initial_masks_{method}"]),
                          load_tensors(snakemake.input[f"masks_{method}"])) for method in methods}
        plot_hyperbolic_embedding_methods(masks, Path(snakemake.output.embedding[0]).with_suffix(""), seed=seed)
        for method, png in zip(methods, snakemake.output.communities[::2]):
            plot_layered_communities(masks[method][1], Path(png).with_suffix(""), seed=seed)
        log_outputs(tracker, snakemake)
