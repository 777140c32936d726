"""Shared fixtures: the real Fashion-MNIST, prepared once per test session."""

from pathlib import Path

import pytest

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the verified Fashion-MNIST (from the Debian package ``dataset-fashion-mnist``)."""
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    from cht.data import prepare_dataset

    root = tmp_path_factory.mktemp("data")
    prepare_dataset("fashion_mnist", root)
    return root
