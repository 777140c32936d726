"""Weight initialisation drawn after the links are fixed, so every link gets a real value.

An initialiser maps a layer's shape ``(out, in)``, its links (sorted flat positions, see
:mod:`cht.sparse.links`) and a generator to one value per link: memory follows the links, and the
draw is the same whichever storage the layer uses. Besides the project's own initialisers
this module holds those of the authors' released code (protocol ``released``, see
:mod:`cht.dst.protocols`) and the bias initialisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cht.registry import Registry
from cht.sparse import links as L

WeightInit = Callable[[tuple[int, int], torch.Tensor, torch.Generator], torch.Tensor]
WEIGHT_INITS: Registry[WeightInit] = Registry("weight init")
register_weight_init = WEIGHT_INITS.register


def _normal(count: int, std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(count, generator=generator, device=generator.device) * std


@register_weight_init("kaiming")
def kaiming(shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform as torch's ``nn.Linear`` default: ``U(±1/sqrt(fan_in))``, ignoring sparsity."""
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(links.numel(), generator=generator, device=generator.device) * 2 - 1) * bound


@register_weight_init("xavier")
def xavier(shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Glorot-normal: std ``sqrt(2 / (fan_in + fan_out))``."""
    fan_out, fan_in = shape
    return _normal(links.numel(), math.sqrt(2.0 / (fan_in + fan_out)), generator)


@register_weight_init("swi")
def sparse_weight_init(shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SWI: ``N(0, 2 / (density · fan_in))``, Kaiming scaled by the expected in-degree (CHT step 2)."""
    fan_out, fan_in = shape
    if links.numel() == 0:
        return torch.zeros(0)
    density = links.numel() / (fan_out * fan_in)
    return _normal(links.numel(), math.sqrt(2.0 / (density * fan_in)), generator)


def init_weights(name: str, shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Values (float32, one per link) drawn by the named rule for a layer of ``shape`` ``(out, in)``."""
    values = WEIGHT_INITS.lookup(name)(shape, links, generator)
    if values.shape != links.shape:
        raise RuntimeError(f"weight init {name!r} returned {tuple(values.shape)} values for {links.numel()} links")
    return values.to(torch.float32)


# --- the released code's initialisers -------------------------------------------------------------------

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


def swi_fan_out_std(shape: tuple[int, int], n_links: int) -> float:
    """SWI on the fan-out, ``sqrt(2 / (density · fan_out))`` = ``sqrt(2 · in / links)``.

    The later release's ``--init_mode swi`` (``mlp_and_cnn/dst_scheduler.py`` ``reset_parameters`` at
    d1677b5: ``math.sqrt(2. / (((1-S) * N) / w.shape[1]))``, ``w.shape[1]`` being the layer's inputs). The
    paper's SWI, :func:`swi_std`, scales by the fan-in; the two agree on square layers and differ by
    ``sqrt(out / in)`` elsewhere (√2 on the first layer of the dim-2 MLP).
    """
    return math.sqrt(2.0 * shape[1] / n_links) if n_links > 0 else 0.0


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
        random = L.random_free_positions(shape, torch.empty(0, dtype=torch.int64), count, generator)
        drawn = self.draw(shape, random, generator)
        values = torch.zeros(count, dtype=torch.float32)
        if count:
            links = index.cpu()
            where = torch.searchsorted(random, links).clamp(max=count - 1)
            shared = random[where] == links
            values[shared] = drawn.cpu()[where[shared]]
        return values.to(index.device)


register_weight_init("kaiming_released")(NormalLinkInit(kaiming_std))
register_weight_init("swi_released")(NormalLinkInit(swi_std))
register_weight_init("swi_fan_out")(NormalLinkInit(swi_fan_out_std))
register_weight_init("released_csti")(DrawnForRandomMask(NormalLinkInit(swi_std)))


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
        std = getattr(WEIGHT_INITS.get(weight_init), "std", None)
        if std is None:
            raise ValueError(f"bias init 'normal' takes the σ of the weight init, but {weight_init!r} has none; "
                             f"use one of {[n for n, f in WEIGHT_INITS.items() if hasattr(f, 'std')]}")
        return torch.randn(out_features, generator=generator) * std(shape, n_links)
    raise ValueError(f"unknown bias init {name!r}; choose one of {list(BIAS_INITS)}")
