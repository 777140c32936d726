"""Weight initialisation drawn after the mask is fixed, so every kept link gets a real value.

Two forms live here while the layer interface moves to links. The dense form ``(weight, density,
generator)`` fills a dense ``(out, in)`` weight that :func:`init_weights` then masks. The link form
(:data:`LINK_WEIGHT_INITS`) is ``init(shape, index, generator) -> values``: ``shape`` is ``(out, in)``,
``index`` the sorted flat positions ``o * in + i`` of the links, and the result holds one float32 value
per link, in ``index`` order. The link form also carries the initialisers of the authors' released
code (protocol ``released``, see :mod:`cht.dst.protocols`) and the bias initialisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cht.registry import Registry

WeightInit = Callable[[torch.Tensor, float, torch.Generator], None]
WEIGHT_INITS: Registry[WeightInit] = Registry("weight init")
register_weight_init = WEIGHT_INITS.register


@register_weight_init("kaiming")
def kaiming(weight: torch.Tensor, density: float, generator: torch.Generator) -> None:
    """Kaiming-uniform as torch's ``nn.Linear`` default (ignores sparsity)."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    weight.uniform_(-bound, bound, generator=generator)


@register_weight_init("xavier")
def xavier(weight: torch.Tensor, density: float, generator: torch.Generator) -> None:
    """Glorot-normal: std ``sqrt(2 / (fan_in + fan_out))``."""
    fan_out, fan_in = weight.shape
    weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)


@register_weight_init("swi")
def sparse_weight_init(weight: torch.Tensor, density: float, generator: torch.Generator) -> None:
    """SWI: ``N(0, 2 / (density · fan_in))``, Kaiming scaled by the expected in-degree (CHT step 2)."""
    fan_in = weight.shape[1]
    if density <= 0:
        weight.zero_()
        return
    weight.normal_(0.0, math.sqrt(2.0 / (density * fan_in)), generator=generator)


@torch.no_grad()
def init_weights(name: str, weight: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> None:
    """Fill ``weight`` (layer convention ``(out, in)``) by the named rule, then zero it off ``mask``.

    ``name`` may also be a link-form initialiser of :data:`LINK_WEIGHT_INITS`.
    """
    if name in LINK_WEIGHT_INITS:
        index = mask.flatten().nonzero().squeeze(1)
        values = LINK_WEIGHT_INITS[name](tuple(weight.shape), index, generator)
        weight.zero_().view(-1)[index] = values.to(weight)
        return
    fill = WEIGHT_INITS.lookup(name)
    density = float(mask.float().mean()) if mask.numel() else 0.0
    fill(weight, density, generator)
    weight.mul_(mask)


# --- link form ---------------------------------------------------------------------------------------------

LinkWeightInit = Callable[[tuple[int, int], torch.Tensor, torch.Generator], torch.Tensor]
LINK_WEIGHT_INITS: Registry[LinkWeightInit] = Registry("link weight init")
register_link_weight_init = LINK_WEIGHT_INITS.register


def kaiming_std(shape: tuple[int, int], n_links: int) -> float:
    """``sqrt(2 / fan_in)`` on the dense fan-in, whatever the sparsity.

    The authors' ``--init_mode kaiming`` (``sparse.py`` at dfbd68d: ``math.sqrt(2 / self.indim)``;
    ``mlp_and_cnn/dst_scheduler.py`` ``reset_parameters`` at d1677b5: ``math.sqrt(2 / w.shape[1])``).
    """
    return math.sqrt(2.0 / shape[1])


def swi_std(shape: tuple[int, int], n_links: int) -> float:
    """SWI, ``sqrt(2 / mean in-degree)`` = ``sqrt(2 · out / links)`` (0 for a layer without links).

    The authors' ``--init_mode swi`` (``sparse.py`` at dfbd68d: ``math.sqrt(2/(self.n_params / self.outdim))``).
    """
    return math.sqrt(2.0 * shape[0] / n_links) if n_links > 0 else 0.0


@dataclass(frozen=True)
class NormalLinkInit:
    """``N(0, σ²)`` on every link, ``σ = std(shape, links)``.

    The released code draws a dense ``N(0, σ²)`` matrix and masks it; drawing one value per link has the
    same distribution at O(links) cost (the random streams differ, as they would on any other machine).
    """

    std: Callable[[tuple[int, int], int], float]

    def __call__(self, shape: tuple[int, int], index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        values = torch.randn(index.numel(), generator=generator, device=generator.device)
        return (values * self.std(shape, index.numel())).to(index.device)


def random_positions(total: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct positions drawn uniformly from ``range(total)``, sorted (CPU int64).

    Rejection sampling keeps memory at O(count) for sparse layers: the distinct values of i.i.d. draws
    form a uniform subset of their size, and a uniform sub-subset of it is again uniform.
    """
    if not 0 <= count <= total:
        raise ValueError(f"cannot draw {count} distinct positions out of {total}")
    if 2 * count >= total:
        return torch.randperm(total, generator=generator)[:count].sort().values
    drawn = torch.empty(0, dtype=torch.long)
    while drawn.numel() < count:
        more = torch.randint(total, (2 * (count - drawn.numel()) + 16,), generator=generator)
        drawn = torch.unique(torch.cat([drawn, more]))
    return drawn[torch.randperm(drawn.numel(), generator=generator)[:count]].sort().values


@dataclass(frozen=True)
class DrawnForRandomMask:
    """The ICLR release's CSTI path: weights drawn for a random mask that CSTI then replaces.

    ``sparse_layer.__init__`` (``sparse.py`` at dfbd68d) draws the weights and masks them with a random
    Erdős–Rényi mask; ``create_sparse_topological_initialization`` (``sparse_topology_initialization.py``)
    then overwrites the mask with the CSTI one without redrawing, so a CSTI link keeps a non-zero weight
    only where the random mask also had a link (about ``density`` of them) and all others start at 0,
    unless ``--reset_parameters`` is passed (the README's CHT command does not pass it). The paper
    describes SWI drawn on the CSTI topology, so this is a bug of the release, kept for protocol
    ``released``. Here: a random mask with as many links as the layer is drawn with ``generator``,
    ``draw`` gives its weights, and each link of ``index`` takes the weight of the same position of the
    random mask, 0 where that mask has no link. (The release's random mask is Bernoulli, its link count
    random; CSTI then keeps that count.)
    """

    draw: NormalLinkInit

    def std(self, shape: tuple[int, int], n_links: int) -> float:
        return self.draw.std(shape, n_links)

    def __call__(self, shape: tuple[int, int], index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count = index.numel()
        random = random_positions(shape[0] * shape[1], count, generator)
        drawn = self.draw(shape, random, generator)
        values = torch.zeros(count, dtype=torch.float32)
        if count:
            links = index.cpu()
            where = torch.searchsorted(random, links).clamp(max=count - 1)
            shared = random[where] == links
            values[shared] = drawn.cpu()[where[shared]]
        return values.to(index.device)


register_link_weight_init("kaiming_released")(NormalLinkInit(kaiming_std))
register_link_weight_init("swi_released")(NormalLinkInit(swi_std))
register_link_weight_init("released_csti")(DrawnForRandomMask(NormalLinkInit(swi_std)))


# --- biases -----------------------------------------------------------------------------------------------

BIAS_INITS = ("zero", "normal", "uniform_fan_in")


def init_bias(name: str, weight_init: str, shape: tuple[int, int], n_links: int,
              generator: torch.Generator) -> torch.Tensor:
    """Initial bias of a sparse layer ``(out, in)`` holding ``n_links`` links (float32, length ``out``).

    * ``zero``: today's default.
    * ``normal``: ``N(0, σ²)`` with the σ of the layer's weight initialiser ``weight_init`` (a link-form
      initialiser with a ``std``), as ``--bias`` does in the ICLR release (``sparse.py`` at dfbd68d:
      ``self.bias.data = torch.randn(self.outdim) * self.stdv``).
    * ``uniform_fan_in``: ``U(−1/√fan_in, 1/√fan_in)``, torch's ``nn.Linear`` default, which the later
      release keeps because its MLP is built from ``nn.Linear`` (``mlp_and_cnn/model.py`` at d1677b5).
    """
    out_features, in_features = shape
    if name == "zero":
        return torch.zeros(out_features)
    if name == "uniform_fan_in":
        bound = 1.0 / math.sqrt(in_features)
        return torch.empty(out_features).uniform_(-bound, bound, generator=generator)
    if name == "normal":
        std = getattr(LINK_WEIGHT_INITS.get(weight_init), "std", None)
        if std is None:
            raise ValueError(f"bias init 'normal' takes the σ of the weight init, but {weight_init!r} has none; "
                             f"use one of {[n for n, f in LINK_WEIGHT_INITS.items() if hasattr(f, 'std')]}")
        return torch.randn(out_features, generator=generator) * std(shape, n_links)
    raise ValueError(f"unknown bias init {name!r}; choose one of {list(BIAS_INITS)}")
