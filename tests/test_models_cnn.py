"""The CNN models: torchvision trunks with the paper's sparse heads, their shapes, link counts, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cht.config import ConfigError, TrainConfig
from cht.dst import available_methods, get_method
from cht.models import BACKBONES, build_model, configure_performance, topology_init_for
from cht.sparse import SparseLinear, link_counts, sparse_layers
from cht.train import build_sparse_topology, train

# torchvision's published parameter counts of the whole ImageNet models, and of the parts the trunk drops.
VGG16_BN_CLASSIFIER = (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
REFERENCE_TRUNK = {
    "vgg16": 138_365_992 - VGG16_BN_CLASSIFIER,
    "googlenet": 6_624_904 - (1024 * 1000 + 1000),
    "resnet50": 25_557_032 - (2048 * 1000 + 1000),
    "resnet152": 60_192_808 - (2048 * 1000 + 1000),
}
# Head as released: (trunk features, hidden widths at dim 1).
HEADS = {"vgg16": (512, [1000] * 3), "googlenet": (1024, [1024] * 3), "resnet50": (2048, [2048]),
         "resnet152": (2048, [2048])}
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def first_conv_weights(name: str, channels: int, cifar_stem: bool) -> int:
    """Weights of the first convolution: 3×3 for VGG and the CIFAR stem, else torchvision's 7×7."""
    side = 3 if name == "vgg16" or cifar_stem else 7
    return channels * 64 * side * side


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(3, 224, 224), *SHAPES], ids=str)
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_trunk_parameters_match_torchvision(name, shape) -> None:
    """The standard-stem RGB trunk has torchvision's exact count; other stems differ by the first conv only."""
    with torch.device("meta"):
        model = build_model(name, shape, 10)
    cifar_stem = shape[-1] <= 32
    expected = (REFERENCE_TRUNK[name] - first_conv_weights(name, 3, cifar_stem=False)
                + first_conv_weights(name, shape[0], cifar_stem))
    assert count(model.trunk) == expected


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_head_shapes_and_dense_counterpart(name, dim) -> None:
    features, widths = HEADS[name]
    with torch.device("meta"):
        sparse, dense = build_model(name, (3, 32, 32), 100, dim=dim), build_model(name, (3, 32, 32), 100, dim=dim,
                                                                               sparse=False)
    sizes = [features] + [w * dim for w in widths]
    expected = list(zip(sizes[:-1], sizes[1:]))
    assert [(layer.in_features, layer.out_features) for layer in sparse_layers(sparse)] == expected
    assert sparse_layers(dense) == []
    dense_hidden = [(layer.in_features, layer.out_features) for layer in dense.head.hidden]
    assert dense_hidden == expected and all(type(layer) is nn.Linear for layer in dense.head.hidden)
    assert (sparse.head.classifier.in_features, sparse.head.classifier.out_features) == (sizes[-1], 100)
    assert count(sparse.trunk) == count(dense.trunk)


@pytest.mark.parametrize("method", ["set", "cht", "granet"])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_head_has_exactly_the_configured_links(name, method) -> None:
    """Exact per-layer link counts at the method's initial density; CSTI falls back to Erdős–Rényi."""
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10, dim=1)
    config = TrainConfig(method=method, model=name, density=0.01, tracking=False, progress=False)
    build_sparse_topology(model, config, train_inputs=None)
    layers = sparse_layers(model)
    shapes = [(layer.in_features, layer.out_features) for layer in layers]
    expected = link_counts(shapes, get_method(method).initial_density(0.01), "uniform")
    assert [layer.n_links for layer in layers] == expected
    assert all(isinstance(layer, SparseLinear) for layer in layers)


def test_csti_applies_to_the_mlp_and_falls_back_to_erdos_renyi_on_cnn_heads() -> None:
    with torch.device("meta"):
        cnn, mlp = build_model("resnet50", (3, 32, 32), 10), build_model("mlp", (1, 28, 28), 10)
    assert topology_init_for(cnn, "csti") == "erdos_renyi"
    assert topology_init_for(mlp, "csti") == "csti"
    assert topology_init_for(cnn, "erdos_renyi") == "erdos_renyi"


def forward_backward_cases() -> list:
    """Every model × input: 224² and ResNet152 beyond its CIFAR input are slow (seconds each on 2 cores)."""
    cases = []
    for name in sorted(BACKBONES):
        for shape in [*SHAPES, (3, 224, 224)]:
            slow = shape[-1] == 224 or (name == "resnet152" and shape != (3, 32, 32))
            cases.append(pytest.param(name, shape, marks=[pytest.mark.slow] if slow else [], id=f"{name}-{shape}"))
    return cases


@pytest.mark.parametrize(("name", "shape"), forward_backward_cases())
def test_forward_and_backward_on_a_batch_of_two(name, shape) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 7, dim=1)
    build_sparse_topology(model, TrainConfig(method="set", model=name, tracking=False, progress=False), None)
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    first_conv = next(m for m in model.trunk.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == shape[0] and first_conv.weight.grad.abs().sum() > 0
    for layer in sparse_layers(model):  # gradients only where links are
        grad = layer.weight.grad
        assert grad is not None and grad[~layer.mask].abs().sum() == 0 and grad[layer.mask].abs().sum() > 0


def test_mixed_precision_covers_the_trunk_only() -> None:
    torch.manual_seed(0)
    model = build_model("resnet50", (3, 32, 32), 10)
    for layer in sparse_layers(model):  # a new sparse layer has no links: give the head some
        links = torch.arange(0, layer.in_features * layer.out_features, 97)
        layer.set_links(links, torch.randn(links.numel()) * 0.1)
    configure_performance(model, torch.device("cpu"), mixed_precision=None, channels_last=None)
    assert model.trunk_autocast is None and not model.channels_last  # automatic: off on CPU
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    plain = model(x)
    configure_performance(model, torch.device("cpu"), mixed_precision=True, channels_last=True)
    head_inputs = []
    model.head.hidden[0].register_forward_hook(lambda module, args, out: head_inputs.append(args[0].dtype))
    mixed = model(x)
    assert model.trunk_autocast == torch.bfloat16 and model.channels_last
    assert head_inputs == [torch.float32] and mixed.dtype == torch.float32
    assert not torch.equal(plain, mixed) and torch.allclose(plain, mixed, atol=0.5, rtol=0.1)
    with pytest.raises(ValueError, match="convolutional models only"):
        configure_performance(build_model("mlp", (1, 28, 28), 10), torch.device("cpu"), True, None)


def test_cnn_options_on_the_mlp_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="mixed_precision: applies to convolutional models only"):
        TrainConfig(model="mlp", mixed_precision=True)
    with pytest.raises(ConfigError, match="augment: fashion_mnist defines no augmentation"):
        TrainConfig(model="vgg16", augment=True)
    with pytest.raises(ConfigError, match="num_workers"):
        TrainConfig(model="vgg16", num_workers=-1)
    assert TrainConfig(model="vgg16", dataset="cifar10").augmentation()
    assert not TrainConfig(model="mlp", dataset="cifar10").augmentation()
    assert not TrainConfig(model="vgg16", dataset="fashion_mnist").augmentation()


def test_new_options_at_their_automatic_value_keep_the_identity() -> None:
    """Checkpoints written before the CNN options existed still resume; setting one changes the identity."""
    config = TrainConfig(model="vgg16", tracking=False)
    legacy = {k: v for k, v in config.to_dict().items()
              if k not in ("augment", "num_workers", "mixed_precision", "channels_last", "early_stop")}
    import hashlib
    import json

    from dataclasses import fields
    observation = {f.name for f in fields(TrainConfig) if f.metadata["observation"]}
    relevant = {k: v for k, v in legacy.items() if k not in observation}
    assert config.identity() == hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
    assert TrainConfig(model="vgg16", num_workers=3, tracking=False).identity() == config.identity()
    assert TrainConfig(model="vgg16", mixed_precision=False, tracking=False).identity() != config.identity()


def quick_cnn(root, **changes) -> TrainConfig:
    settings = dict(model="vgg16", dataset="fashion_mnist", epochs=2, batch_size=16, lr=0.01,
                    max_train_samples=32, max_test_samples=32, update_interval=1, data_root=str(root),
                    device="cpu", tracking=False, progress=False)
    return TrainConfig(**{**settings, **changes})


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_every_method_evolves_a_cnn_head_unchanged(fashion_root, tmp_path, method) -> None:
    metrics = train(quick_cnn(fashion_root, method=method), tmp_path)
    target = link_counts([(512, 1000), (1000, 1000), (1000, 1000)], 0.01, "uniform")
    links, initial = metrics["links_per_layer"], metrics["initial_links_per_layer"]
    if method == "cht_iclr":  # the released tie rule may grow a few extra links or miss some
        assert initial == target and all(abs(n - t) <= 0.1 * t for n, t in zip(links, target))
    elif get_method(method).density.end > 0:  # denser at first, pruned towards the target
        assert all(t <= n <= i for n, t, i in zip(links, target, initial)) and initial != target
    elif get_method(method).sparse:
        assert links == initial == target
    if get_method(method).evolves:
        assert len(metrics["evolution"]) == 1
        record = metrics["evolution"][0]
        # Density schedules prune (GMP, and the EM_S methods at their last update); the others remove.
        assert all(layer["removed"] + layer["pruned"] > 0 for layer in record["layers"]), record


@pytest.mark.slow
def test_short_real_cnn_training_on_fashion_mnist_learns(fashion_root, tmp_path) -> None:
    config = quick_cnn(fashion_root, method="cht", epochs=2, batch_size=32, max_train_samples=256,
                       max_test_samples=256)
    metrics = train(config, tmp_path)
    assert metrics["model"] == "vgg16" and metrics["final_test_accuracy"] > 0.3  # chance is 0.1
    assert metrics["train_loss"][1] < metrics["train_loss"][0]
    assert len(metrics["evolution"]) == 1 and isinstance(torch.load(tmp_path / "masks.pt")[0], torch.Tensor)
