"""Batch sources at image scale: CIFAR, Tiny-ImageNet and ImageNet in their official formats, made small here.

Each dataset's checksum check runs first against the test-made files (and refuses them); the fixture then
bypasses it explicitly by registering a spec with the test files' own digests.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from test_data_cifar import build_fake_cifar
from test_data_folders import WNIDS, imagenet_tree, tiny_imagenet_tree, zip_tree
from test_train import comparable, interrupted_then_resumed, same_final_weights

from cht.config import TrainConfig
from cht.data import DATASETS, DatasetError, load_tensors, prepare_dataset
from cht.data.batches import LoaderBatches, TensorBatches, batch_sources
from cht.sparse import link_counts
from cht.train import train


@pytest.fixture
def cifar10(tmp_path, monkeypatch) -> dict:
    fake = build_fake_cifar("cifar10", tmp_path / "source")
    with pytest.raises(DatasetError, match="md5"):  # the real checksums refuse the test-made archive
        prepare_dataset("cifar10", tmp_path / "refused", sources=[fake["source"]], download=False)
    monkeypatch.setitem(DATASETS, "cifar10", fake["spec"])  # bypass: the test files' own digests
    root = tmp_path / "root"
    prepare_dataset("cifar10", root, sources=[fake["source"]], download=False)
    return {**fake, "root": root}


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> dict:
    val_classes = tiny_imagenet_tree(tmp_path / "unzipped")
    data = zip_tree(tmp_path / "unzipped", tmp_path / "source" / "tiny-imagenet-200.zip")
    real = dataclasses.replace(DATASETS["tiny_imagenet"], num_classes=len(WNIDS))
    monkeypatch.setitem(DATASETS, "tiny_imagenet", real)
    with pytest.raises(DatasetError, match="md5"):
        prepare_dataset("tiny_imagenet", tmp_path / "refused", sources=[tmp_path / "source"], download=False)
    import hashlib

    monkeypatch.setitem(DATASETS, "tiny_imagenet", dataclasses.replace(
        real, archives=(dataclasses.replace(real.archives[0], md5=hashlib.md5(data).hexdigest()),)))
    root = tmp_path / "root"
    prepare_dataset("tiny_imagenet", root, sources=[tmp_path / "source"], download=False)
    return {"root": root, "val_classes": val_classes}


def drain(batches) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = zip(*batches)
    return torch.cat(inputs), torch.cat(targets)


def test_tensor_batches_reproduce_the_mlp_shuffle() -> None:
    """randperm(n, generator) then contiguous slices: the order the MLP has always trained in."""
    inputs, targets = torch.randn(10, 1, 2, 2), torch.arange(10)
    source = TensorBatches(inputs, targets, batch_size=4, generator=torch.Generator().manual_seed(5))
    reference = torch.Generator().manual_seed(5)
    for epoch in range(2):
        order = torch.randperm(10, generator=reference)
        batches = list(source.epoch(epoch))
        assert [len(t) for _, t in batches] == [4, 4, 2] and source.batches_per_epoch() == 3
        assert torch.equal(torch.cat([t for _, t in batches]), order)
        assert torch.equal(batches[1][0], inputs[order[4:8]])
    state = source.state_dict()
    after = list(source.epoch(2))
    source.load_state_dict(state)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(after, source.epoch(2)))
    assert torch.equal(drain(source.ordered())[0], inputs)


def test_unaugmented_cifar_stays_in_memory(cifar10) -> None:
    train_source, test_source = batch_sources("cifar10", cifar10["root"], batch_size=8, seed=0, augment=False)
    assert isinstance(train_source, TensorBatches) and isinstance(test_source, TensorBatches)
    assert torch.equal(train_source.inputs, load_tensors("cifar10", cifar10["root"], train=True)[0])


def padded_shift_match(augmented: torch.Tensor, original: torch.Tensor, fill: torch.Tensor) -> bool:
    """Whether ``augmented`` is ``original``, maybe flipped, shifted by ≤ 4 pixels with ``fill`` around it."""
    for image in (original, original.flip(-1)):
        padded = fill.view(-1, 1, 1).expand(3, 40, 40).clone()
        padded[:, 4:36, 4:36] = image
        for top in range(9):
            for left in range(9):
                if torch.allclose(padded[:, top:top + 32, left:left + 32], augmented, atol=1e-5):
                    return True
    return False


def test_cifar_augmentation_is_the_released_crop_and_flip_and_seeded(cifar10) -> None:
    spec = DATASETS["cifar10"]
    train_source, test_source = batch_sources("cifar10", cifar10["root"], batch_size=8, seed=3, augment=True,
                                              num_workers=0)
    assert isinstance(train_source, LoaderBatches) and train_source.batches_per_epoch() == math.ceil(20 / 8)
    plain, labels = load_tensors("cifar10", cifar10["root"], train=True)
    images, targets = drain(train_source.epoch(0))
    assert sorted(targets.tolist()) == sorted(labels.tolist())
    fill = (0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)  # zero padding, normalised
    matched = 0
    for image, target in zip(images, targets):
        candidates = [k for k in range(len(plain)) if labels[k] == target]
        assert any(padded_shift_match(image, plain[k], fill) for k in candidates)
        matched += any(torch.allclose(image, plain[k], atol=1e-5) for k in candidates)
    assert matched < len(images)  # most samples are moved or flipped
    again, _ = drain(train_source.epoch(0))
    next_epoch, _ = drain(train_source.epoch(1))
    assert torch.equal(again, images) and not torch.equal(next_epoch, images)
    test_images, test_targets = drain(test_source.ordered())
    reference_x, reference_y = load_tensors("cifar10", cifar10["root"], train=False)
    assert torch.allclose(test_images, reference_x, atol=1e-6) and torch.equal(test_targets, reference_y)


def test_augmented_batches_do_not_depend_on_the_number_of_workers(cifar10) -> None:
    batches = {}
    for workers in (0, 2):
        source, _ = batch_sources("cifar10", cifar10["root"], batch_size=8, seed=1, augment=True,
                                  num_workers=workers)
        batches[workers] = drain(source.epoch(4))
    assert torch.equal(batches[0][0], batches[2][0]) and torch.equal(batches[0][1], batches[2][1])


def test_sample_limits_keep_a_prefix_of_the_split(cifar10) -> None:
    train_source, test_source = batch_sources("cifar10", cifar10["root"], batch_size=4, seed=0, augment=True,
                                              num_workers=0, max_train_samples=6, max_test_samples=3)
    assert len(train_source) == 6 and len(test_source) == 3
    _, labels = load_tensors("cifar10", cifar10["root"], train=True, max_samples=6)
    assert sorted(drain(train_source.epoch(0))[1].tolist()) == sorted(labels.tolist())


def test_tiny_imagenet_streams_64_pixel_images_with_arranged_val_labels(tiny) -> None:
    train_source, test_source = batch_sources("tiny_imagenet", tiny["root"], batch_size=4, seed=0, augment=True,
                                              num_workers=0)
    assert isinstance(train_source, LoaderBatches) and len(train_source) == 6 and len(test_source) == 6
    images, _ = drain(train_source.epoch(0))
    assert images.shape == (6, 3, 64, 64)
    val = test_source.dataset.dataset
    expected = sorted(WNIDS.index(wnid) for wnid in tiny["val_classes"].values())
    assert sorted(drain(test_source.ordered())[1].tolist()) == expected
    assert [val.classes[label] for _, label in val.samples] == [tiny["val_classes"][path.split("/")[-1]]
                                                                for path, _ in val.samples]


def test_imagenet_uses_resized_crops_for_training_and_centre_crops_for_evaluation(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(DATASETS, "imagenet", dataclasses.replace(DATASETS["imagenet"], num_classes=2))
    tree = imagenet_tree(tmp_path / "ILSVRC2012")
    train_source, test_source = batch_sources("imagenet", tmp_path / "root", batch_size=2, seed=0, augment=True,
                                              num_workers=0, sources=[tree])
    images, _ = drain(train_source.epoch(0))
    assert images.shape == (2, 3, 224, 224)
    first, second = drain(test_source.ordered())[0], drain(test_source.ordered())[0]
    assert first.shape == (2, 3, 224, 224) and torch.equal(first, second)
    from PIL import Image
    from torchvision.transforms import functional

    spec = DATASETS["imagenet"]
    path = test_source.dataset.dataset.samples[0][0]
    image = functional.center_crop(functional.resize(Image.open(path).convert("RGB"), 256), 224)
    expected = functional.normalize(functional.to_tensor(image), spec.mean, spec.std)
    assert torch.allclose(first[0], expected, atol=1e-6)


@pytest.mark.slow
def test_training_on_augmented_cifar_resumes_exactly(cifar10, tmp_path, monkeypatch) -> None:
    """A run through the DataLoader, interrupted after an epoch, ends exactly as an uninterrupted one.

    The static MLP keeps it cheap (the loop and the batch source are the ones a CNN uses; resuming evolution
    state is tested in test_train.py): what must match is the shuffled, augmented stream of batches."""
    config = TrainConfig(method="static", model="mlp", dataset="cifar10", augment=True, epochs=3, batch_size=8,
                         lr=0.01, data_root=str(cifar10["root"]), data_sources=[str(cifar10["source"])],
                         num_workers=0, device="cpu", tracking=False, progress=False)
    assert config.augmentation()
    uninterrupted = train(config, tmp_path / "full")
    resumed = interrupted_then_resumed(config, tmp_path / "resumed", monkeypatch, crash_epoch=2)
    assert comparable(resumed) == comparable(uninterrupted)
    assert same_final_weights(tmp_path / "full", tmp_path / "resumed")


@pytest.mark.slow
def test_cli_trains_resnet50_on_cifar10(cifar10, tmp_path, capsys) -> None:
    from cht.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "resnet50", "--dataset", "cifar10", "--method", "cht", "--epochs", "1",
                 "--batch-size", "4", "--max-train-samples", "4", "--max-test-samples", "4", "--num-workers", "0",
                 "--data-root", str(cifar10["root"]), "--data-source", str(cifar10["source"]), "--device", "cpu",
                 "--no-tracking", "--no-progress", "--out", str(out)])
    assert code == 0 and (out / "metrics.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    # The record holds the resolved setting: augmentation is on by default for a CNN on CIFAR-10.
    assert metrics["model"] == "resnet50" and metrics["config"]["augment"] is True
    assert metrics["links_per_layer"] == link_counts([(2048, 2048)], 0.01, "uniform")
