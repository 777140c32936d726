"""The method registry: each DST method is a composition of existing pieces.

Adding a method is one :func:`register_method` call naming its topology and weight initialisation,
removal rule, regrowth rule, schedules and options. Defaults follow the paper's MLP settings (update
every epoch, ζ = 0.3); the training configuration may override the evolution schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cht.dst.regrowth import CHRegrowth, GradientRegrowth, RandomRegrowth, RegrowthRule, SoftCHRegrowth
from cht.dst.removal import (MagnitudeRemoval, MagnitudeTopKRemoval, MESTRemoval, RelativeImportanceRemoval,
                             RemovalRule, SoftRemoval)
from cht.dst.schedule import (ConstantDensity, CubicDensity, DensitySchedule, EvolutionSchedule, ExtraDensity,
                              SigmoidDensity)
from cht.init.weights import BIAS_INITS
from cht.registry import Registry


@dataclass(frozen=True)
class EarlyStop:
    """Freeze the topology once regrowth mostly re-creates the links it just removed.

    A layer signals when more than ``threshold`` of its regrown links had just been removed. With
    ``sticky=False`` every layer must signal at the same update (the paper's wording); with
    ``sticky=True`` a layer's signal, once raised, stays raised and the topology freezes when the last
    layer raises its own (the ICLR release's code).
    """

    threshold: float = 0.9
    sticky: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"early stop threshold must lie in [0, 1], got {self.threshold}")


@dataclass(frozen=True)
class Method:
    """A sparse-training method: how the topology starts and how it evolves.

    Sparse methods default to SWI (Kaiming scaled by the expected in-degree): with torch's dense
    default a 1%-dense MLP starts with vanishing activations and stays at chance for epochs, which
    would measure the initialisation rather than the method (RigL and later work scale it likewise).
    Sparse layers' biases start at zero unless ``bias_init`` says otherwise (see
    :func:`cht.init.weights.init_bias`; protocol ``released`` uses the authors' choices).
    """

    name: str
    description: str
    sparse: bool = True
    topology_init: str = "erdos_renyi"
    weight_init: str = "swi"
    bias_init: str = "zero"
    removal: RemovalRule | None = None
    regrowth: RegrowthRule | None = None
    schedule: EvolutionSchedule = field(default_factory=EvolutionSchedule)
    density: DensitySchedule = field(default_factory=ConstantDensity)
    percolation: bool = False
    early_stop: EarlyStop | None = None
    needs_dense_grad: bool = False

    def __post_init__(self) -> None:
        if self.bias_init not in BIAS_INITS:
            raise ValueError(f"method {self.name!r}: bias_init {self.bias_init!r} is not one of {BIAS_INITS}")
        if (self.removal is None) != (self.regrowth is None):
            raise ValueError(f"method {self.name!r}: give both a removal and a regrowth rule, or neither")
        if self.density.end > 0 and not self.sparse:
            raise ValueError(f"method {self.name!r}: a density schedule needs a sparse method")
        if self.density.end > self.schedule.end_fraction:
            raise ValueError(f"method {self.name!r}: evolution ends at {self.schedule.end_fraction} of training "
                             f"but the density schedule reaches the target only at {self.density.end}; "
                             f"set end_fraction ≥ {self.density.end}")

    @property
    def evolves(self) -> bool:
        """Whether the topology changes during training: by removal and regrowth, or by density pruning
        alone (gradual magnitude pruning has a density schedule and neither rule)."""
        return self.sparse and (self.removal is not None or self.density.end > 0)

    def initial_density(self, target: float) -> float:
        """Density to initialise at when training should end at ``target`` (above it for GraNet/CHTss)."""
        return self.density.start_density(target)

    def with_schedule(self, **changes: Any) -> Method:
        """This method with some schedule fields replaced (``None`` values keep the method's default)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, schedule=replace(self.schedule, **changes)) if changes else self


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Make ``method`` available by name to the CLI, configs and pipeline."""
    METHODS[method.name] = method
    return method


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.lookup(name)


CHT_TOPOLOGY = dict(topology_init="csti", weight_init="swi", percolation=True)

register_method(Method("fc", "fully connected (dense) counterpart", sparse=False))
register_method(Method("static", "fixed random (Erdős–Rényi) sparse topology"))
register_method(Method("set", "SET: magnitude removal, uniform random regrowth",
                       removal=MagnitudeRemoval(), regrowth=RandomRegrowth()))
register_method(Method("rigl", "RigL: smallest-|w| removal, dense-gradient regrowth, cosine ζ, stops at 75%",
                       removal=MagnitudeTopKRemoval(), regrowth=GradientRegrowth(),
                       schedule=EvolutionSchedule(zeta_decay="cosine", end_fraction=0.75),
                       needs_dense_grad=True))
register_method(Method("mest", "MEST: removal by |w| + 0.01·|grad|, uniform random regrowth",
                       removal=MESTRemoval(gradient_factor=0.01), regrowth=RandomRegrowth(),
                       needs_dense_grad=True))
register_method(Method("granet", "GraNet: cubic magnitude pruning from 50% density to the target by 75% "
                                 "of training, smallest-|w| removal, gradient regrowth, cosine ζ",
                       removal=MagnitudeTopKRemoval(), regrowth=GradientRegrowth(),
                       schedule=EvolutionSchedule(zeta_decay="cosine"),
                       density=CubicDensity(start=0.5, begin=0.0, end=0.75), needs_dense_grad=True))
register_method(Method("cht", "CHT: CSTI + SWI, SET removal, percolation, CH3-L3 top-n regrowth, "
                              "early stop at 90% overlap",
                       removal=MagnitudeRemoval(), regrowth=CHRegrowth("CH3-L3", selection="top_n"),
                       early_stop=EarlyStop(0.9), **CHT_TOPOLOGY))
register_method(Method("cht_iclr", "CHT as released with the ICLR 2024 paper: CH3-L3 threshold selection "
                                   "(ties grow extra links), sticky per-layer early stop",
                       removal=MagnitudeRemoval(), regrowth=CHRegrowth("CH3-L3", selection="iclr"),
                       early_stop=EarlyStop(0.9, sticky=True), **CHT_TOPOLOGY))
register_method(Method("chts", "CHTs: removal sampled ∝ |w|^T (T 1→3), percolation, regrowth sampled "
                               "∝ CH3-L3n score, CSTI + SWI",
                       removal=SoftRemoval(MagnitudeTopKRemoval(), 1.0, 3.0),
                       regrowth=SoftCHRegrowth("CH3-L3n"),
                       **CHT_TOPOLOGY))
register_method(Method("chtss", "CHTss: CHTs with sigmoid density decay from 50% to the target by 80% "
                                "of training",
                       removal=SoftRemoval(MagnitudeTopKRemoval(), 1.0, 3.0),
                       regrowth=SoftCHRegrowth("CH3-L3n"),
                       density=SigmoidDensity(start=0.5, end=0.8), **CHT_TOPOLOGY))


# Released configurations of the follow-up methods, next to today's `chts`/`chtss` (which keep the soft
# rules of the follow-up paper on this project's CHT pipeline). What the authors' commands set that the
# rule classes cannot express is listed in each description.

# The CHTs MLP command of the later README (Cannistraci-Hebb-training, Readme.md at d1677b5): `--regrow_method
# CH3_L3p_soft --remove_method weight_magnitude --init_mode swi --self_correlated_sparse --chain_removal
# --zeta 0.3 --update_interval 1 --EM_S`. In mlp_and_cnn/dst_scheduler.py (d1677b5): hard magnitude removal
# (top-|w| keep), CH3-L3 path scores (L3p, the exact rule) sampled ∝ score, evolution until T_end = 75% of
# training (run.py: `T_end = args.epochs * 0.75` with --EM_S), `reset_parameters` draws SWI before the
# CSTI mask is applied (so CSTI links do get weights), and the MLP is built of nn.Linear layers whose
# biases keep torch's default.
register_method(Method("chts_mlp_released",
                       "CHTs as the later release's MLP command (d1677b5): CSTI + SWI, hard magnitude removal, "
                       "percolation, regrowth sampled ∝ exact CH3-L3, until 75% of training; without its "
                       "--EM_S extra-density phase (train at target + 5%, then + 2.5%), which no density "
                       "schedule expresses yet",
                       topology_init="csti", weight_init="swi", bias_init="uniform_fan_in", percolation=True,
                       removal=MagnitudeTopKRemoval(), regrowth=SoftCHRegrowth("CH3-L3"),
                       schedule=EvolutionSchedule(zeta=0.3, end_fraction=0.75)))

# The CHTss command of the NeurIPS 2025 release (Cannistraci-Hebb-Training-Soft-Rule-, Readme.md and
# llm/dst_scheduler.py at 1f91f31, LLaMA pretraining): `--BRF --brf_r 0.3 --remove_method weight_magnitude_soft
# --start_T 1.0 --end_T 9.0 --regrow_method CH2_L3n_soft --zeta 0.10 --adaptive_zeta --granet
# --granet_init_sparsity 0.5 --pruning_method ri --pruning_scheduler s_shape --pruning_T_end 8000` of
# 10000 steps, T_end = 75% of the steps (torchrun_main.py), no --chain_removal.
# * Removal is soft magnitude (`weight_magnitude_soft`); relative importance (`ri`) is the score of the
#   density-decay pruning, which the engine does by magnitude for every method (not composable yet).
# * The temperature rises as `T0 + step·(T1 − T0)/T_end`, reaching 9 at 75% of training; SoftRemoval ramps
#   over the whole run, so its end temperature 1 + 8/0.75 gives the same T at every update (none after 75%).
# * `link_regrowth` takes the top-k CH2-L3n scores even for `*_soft` methods: the paper samples regrowth
#   ∝ score; the release's top-k is kept here.
# * The s-shaped decay (k = 6) is cut by T_end = 75% before its pruning_T_end of 80%, at 99.7% of the
#   decay; here it ends at 75% exactly (the engine needs the density schedule to end by the last update).
# * `--init_mode` keeps the LLaMA model's own init and its linears have no bias: SWI and zero bias here
#   (assumption for the MLP).
register_method(Method("chtss_llm_released",
                       "CHTss as the NeurIPS 2025 release's LLaMA command: BRF r = 0.3, removal sampled ∝ |w|^T "
                       "(T 1 → 9 by 75% of training), top-n CH2-L3n regrowth, cosine ζ from 0.1, sigmoid density "
                       "decay from 50% to the target by 75%; its relative-importance density pruning is done by "
                       "magnitude here",
                       topology_init="brf_r0.3", weight_init="swi",
                       removal=SoftRemoval(MagnitudeTopKRemoval(), 1.0, 1.0 + 8.0 / 0.75),
                       regrowth=CHRegrowth("CH2-L3n", selection="top_n"),
                       schedule=EvolutionSchedule(zeta=0.1, zeta_decay="cosine", end_fraction=0.75),
                       density=SigmoidDensity(start=0.5, end=0.75)))


# The methods of the NeurIPS 2025 paper's MLP table (Zhang et al., arXiv 2501.19107, Table 7) that the
# registry lacked, composed as the later release runs them (biomedical-cybernetics/Cannistraci-Hebb-training,
# Readme.md and mlp_and_cnn/ at d1677b5; "d1677b5" below). Their initialisation follows the protocol
# (`neurips2025` for the table, see cht/dst/protocols.py). GMP, GraNet's and CHTss's density decay are not
# in that release: their schedules follow the paper (cubic Eq. 10; sigmoid with k = 6) and the shapes of the
# NeurIPS release's LLM scheduler (Cannistraci-Hebb-Training-Soft-Rule-, llm/dst_scheduler.py at 1f91f31:
# `_current_prune_rate`, `uniform_pruning`), with their start density and timing marked ASSUMPTION.
#
# * CHTs, as the README's CHTs command (`--regrow_method CH3_L3p_soft --remove_method weight_magnitude
#   --self_correlated_sparse --chain_removal --zeta 0.3 --update_interval 1 --dst_scheduler --EM_S`):
#   CSTI at the target + 5% (dst_scheduler.py:120-121), every update keeps the target's worth of largest
#   weights (drop fraction (1−S−d)/(1−S), :409), percolation (:481-485), regrowth sampled ∝ score
#   (:607-613) of 5% of the positions until 60% of T_end, then 2.5% (:494-503), none at the last update;
#   T_end = 75% of training with --EM_S (run.py:195-196). The paper's soft removal (δ rising from 0.5)
#   is not what this command runs: the command's hard removal is used.
# * CHTs with CH2-L3n: the same command with `--regrow_method CH2_L3n_soft` (a choice the README lists).
# * CHTss: CHTs with CH2-L3n regrowth whose density decays along the sigmoid (k = 6) instead of --EM_S.
#   ASSUMPTION: from 50% density (Table 1's caption for CIFAR-10; the LLM command's
#   `--granet_init_sparsity 0.5`) to the target by 75% of training (llm/torchrun_main.py:836-837,
#   `pruning_T_end = 0.75 · steps`), magnitude pruning, ζ 0.3 and hard removal as the CHTs MLP command.
# * GMP: the cubic schedule with no regrowth (llm/dst_scheduler.py:786-792 returns after pruning).
#   ASSUMPTION: from 50% density to the target by 75% of training, as GraNet here.
EM_S = dict(density=ExtraDensity(extra=0.05, half_at=0.6 * 0.75, end=0.75),
            schedule=EvolutionSchedule(zeta_decay="surplus", end_fraction=0.75))
register_method(Method("chtsp", "CHTs with CH3-L3p regrowth as the later release's MLP command (--EM_S): CSTI + SWI "
                                "at the target + 5%, each update keeps the target's largest weights, percolation, "
                                "regrows 5% (later 2.5%) of the positions sampled ∝ exact CH3-L3, target density "
                                "from 75% of training",
                       removal=MagnitudeTopKRemoval(), regrowth=SoftCHRegrowth("CH3-L3"), **EM_S, **CHT_TOPOLOGY))
register_method(Method("chtsn", "CHTs with CH2-L3n regrowth: chtsp with regrowth sampled ∝ the node-based CH2-L3n score",
                       removal=MagnitudeTopKRemoval(), regrowth=SoftCHRegrowth("CH2-L3n"), **EM_S, **CHT_TOPOLOGY))
register_method(Method("chtssn", "CHTss with CH2-L3n regrowth: CSTI + SWI at 50% density, sigmoid (k = 6) decay to "
                                 "the target by 75% of training, smallest-|w| removal, percolation, regrowth sampled "
                                 "∝ CH2-L3n",
                       removal=MagnitudeTopKRemoval(), regrowth=SoftCHRegrowth("CH2-L3n"),
                       schedule=EvolutionSchedule(end_fraction=0.75), density=SigmoidDensity(start=0.5, end=0.75),
                       **CHT_TOPOLOGY))
register_method(Method("gmp", "GMP: gradual magnitude pruning along the cubic schedule from 50% density to the target "
                              "by 75% of training, no regrowth",
                       schedule=EvolutionSchedule(end_fraction=0.75),
                       density=CubicDensity(start=0.5, begin=0.0, end=0.75)))
# The paper's text says removal by relative importance helps Fashion-MNIST (weight magnitude MNIST and EMNIST);
# the README's command removes by magnitude. The release's `--remove_method ri` (dst_scheduler.py:450-458) in
# the same command, to run both where they disagree.
for base in ("chtsp", "chtsn"):
    register_method(replace(get_method(base), name=f"{base}_ri",
                            description=f"{base} with removal by relative importance (--remove_method ri)",
                            removal=RelativeImportanceRemoval()))
# The same command without --EM_S, to see which of its parts sets the ANP: the target density throughout, ζ 0.3
# of the links replaced at every update until the end (T_end = the epochs without --EM_S or --adaptive_zeta,
# run.py:195-198; the removed count is regrown, dst_scheduler.py:513-514).
for base in ("chtsp", "chtsn"):
    register_method(replace(get_method(base), name=f"{base}_no_em_s",
                            description=f"{base} without --EM_S: the target density throughout, ζ 0.3 replaced at "
                                        "every update until the end",
                            schedule=EvolutionSchedule(), density=ConstantDensity()))
