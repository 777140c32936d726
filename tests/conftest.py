"""Shared fixtures: the real Fashion-MNIST, prepared once per test session."""

import os
import socket
import subprocess
from collections.abc import Iterator
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


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where nothing answers, for the whole test: this socket keeps the port bound but
    never listens, so no other process can take the port and every connection to it is refused at once."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{holder.getsockname()[1]}"


def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` for one test (needs root); the test is skipped where that is impossible."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system: a real full disk for anything larger."""
    yield from mounted_tmpfs(tmp_path / "tiny", "size=256k")


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write in: a read-only tmpfs as root (root ignores permission bits), else chmod 555."""
    if os.geteuid() == 0:
        yield from mounted_tmpfs(tmp_path / "read-only", "ro,size=1m")
        return
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)
