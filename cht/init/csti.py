"""CSTI: correlated sparse topological initialisation (CHT step 1, for MLPs on raw inputs).

Links go where input features co-vary: the Pearson correlation of the input features over the training
set (NaN from constant features → 0, self-correlation → 0) ranks all pairs, and a layer keeps the
pairs of largest ``|corr|``, exactly as many as its density allows. A layer wider than the input sees
the correlation matrix tiled (a hidden width of ``dim × inputs`` tiles it ``dim`` times along that
side), and hidden layers reuse the tiled matrix, as in the paper.

The correlation of a dataset is computed once and cached as ``<data_root>/cache/csti_<dataset>_n<N>.pt``
(N training samples), because the pass over the training set costs far more than the ranking.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cht.init.topology import InitContext, register_topology_init
from cht.io import CheckpointError, load_tensors, save_tensors_atomic

CHUNK_ROWS = 4096


def feature_correlation(inputs: torch.Tensor) -> torch.Tensor:
    """Pearson correlation (float64, F×F) between the features of ``inputs`` (N samples × any shape).

    Constant features correlate 0 with everything and the diagonal is 0, so neither attracts links.
    Accumulated in chunks of centred float64 products: memory stays at a few chunk copies.
    """
    if inputs.dim() < 2 or inputs.shape[0] < 2:
        raise ValueError(f"CSTI needs at least 2 training samples with features, got shape {tuple(inputs.shape)}")
    samples = inputs.reshape(inputs.shape[0], -1)
    n, features = samples.shape
    total = torch.zeros(features, dtype=torch.float64, device=samples.device)
    for chunk in samples.split(CHUNK_ROWS):
        total += chunk.to(torch.float64).sum(dim=0)
    mean = total / n
    covariance = torch.zeros(features, features, dtype=torch.float64, device=samples.device)
    for chunk in samples.split(CHUNK_ROWS):
        centred = chunk.to(torch.float64) - mean
        covariance.addmm_(centred.t(), centred)
    spread = covariance.diagonal().clamp(min=0).sqrt()
    scale = torch.outer(spread, spread)
    correlation = torch.where(scale > 0, covariance / scale.clamp(min=torch.finfo(torch.float64).tiny),
                              torch.zeros_like(covariance))
    correlation.clamp_(-1.0, 1.0).fill_diagonal_(0.0)
    return correlation


def cache_path(data_root: str | os.PathLike, dataset: str, n_samples: int) -> Path:
    """Where the correlation of ``dataset`` over ``n_samples`` training samples is cached."""
    return Path(data_root) / "cache" / f"csti_{dataset}_n{n_samples}.pt"


def dataset_correlation(context: InitContext) -> torch.Tensor:
    """The input correlation for this run, read from the cache when the dataset and data root are known."""
    inputs = context.extras.get("train_inputs")
    if not isinstance(inputs, torch.Tensor):
        raise ValueError("CSTI needs the training inputs: pass InitContext.extras['train_inputs'] "
                         "(the N×C×H×W training tensor)")
    dataset, data_root = context.extras.get("dataset"), context.extras.get("data_root")
    if dataset is None or data_root is None:
        return feature_correlation(inputs)
    features = inputs[0].numel()
    path = cache_path(data_root, dataset, inputs.shape[0])
    if path.exists():
        try:
            cached = load_tensors(path, map_location=inputs.device)
        except CheckpointError:  # a damaged cache is recomputed and replaced
            cached = None
        if isinstance(cached, torch.Tensor) and cached.shape == (features, features):
            return cached
    correlation = feature_correlation(inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(path, correlation.cpu())
    return correlation


def tile_to_layer(correlation: torch.Tensor, n_in: int, n_out: int) -> torch.Tensor:
    """The F×F correlation repeated to cover an ``(n_in, n_out)`` layer whose sizes are multiples of F."""
    features = correlation.shape[0]
    if n_in % features or n_out % features:
        raise ValueError(f"CSTI tiles the {features}×{features} input correlation, so layer sizes must be "
                         f"multiples of {features}; got a {n_in}×{n_out} layer. Use a topology init such as "
                         "erdos_renyi for layers that do not see the raw inputs")
    return correlation.repeat(n_in // features, n_out // features)


def strongest_links(strength: torch.Tensor, n_links: int, generator: torch.Generator) -> torch.Tensor:
    """Exactly ``n_links`` positions of largest ``strength``; ties at the cut-off broken at random.

    Tiling and symmetry repeat every correlation value many times, so a fixed tie order would favour
    one tile; a random permutation (from the init generator) followed by a stable sort avoids that.
    """
    flat = strength.flatten()
    if not 0 <= n_links <= flat.numel():
        raise ValueError(f"cannot keep {n_links} links in a layer of {flat.numel()} positions")
    shuffle = torch.randperm(flat.numel(), generator=generator, device=generator.device).to(flat.device)
    ranked = torch.argsort(flat[shuffle], descending=True, stable=True)[:n_links]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[shuffle[ranked]] = True
    return chosen.view(strength.shape)


@register_topology_init("csti")
def correlated_sparse_topology(n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """CSTI adjacency ``(n_in, n_out)``: the ``n_links`` input-feature pairs of largest ``|corr|``."""
    correlation = dataset_correlation(context)
    return strongest_links(tile_to_layer(correlation, n_in, n_out).abs(), n_links, context.generator)
