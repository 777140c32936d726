"""Fetching, verifying and loading IDX datasets (MNIST, EMNIST) from small files the tests make.

The specs are patched with the checksums of the test-made files, so every code path runs exactly as it
would on the real data: local sources, mirrors, an HTTP download on 127.0.0.1, corruption, interruption.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cht.data import DATASETS, Archive, DatasetError, RawFile, dataset_checksum, load_tensors, prepare_dataset
from cht.data import fetch, integrity

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_idx_set(seed: int, n_train: int, n_test: int, classes: int, names=MNIST_NAMES) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train": (rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, classes, n_train)),
              "test": (rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, classes, n_test))}
    images_train, labels_train, images_test, labels_test = names
    return {"arrays": arrays,
            "contents": {images_train: idx_images(arrays["train"][0]), labels_train: idx_labels(arrays["train"][1]),
                         images_test: idx_images(arrays["test"][0]), labels_test: idx_labels(arrays["test"][1])}}


def write_files(directory: Path, contents: dict[str, bytes], gzipped: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)
    return directory


class RecordingServer:
    """A static file server on 127.0.0.1 that remembers every path asked for."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def fetched(self) -> list[str]:
        """Distinct .gz paths asked for (torchvision sends a HEAD before every GET)."""
        return sorted({path for path in self.requests if path.endswith(".gz")})


@pytest.fixture
def server(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    recording = RecordingServer(served)
    recording.thread.start()
    yield recording, served
    recording.server.shutdown()
    recording.server.server_close()


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server) -> dict:
    """Patch the MNIST spec to a 12+6-image set; its official URLs point at the local server's /official/."""
    recording, served = server
    fake = make_idx_set(seed=0, n_train=12, n_test=6, classes=10)
    official = write_files(served / "official", fake["contents"], gzipped=True)
    spec = dataclasses.replace(
        DATASETS["mnist"], split_sizes=(12, 6), default_sources=(),
        files=tuple(RawFile(name, len(data), sha256(data), md5(data)) for name, data in fake["contents"].items()),
        archives=tuple(Archive(f"{name}.gz", md5((official / f"{name}.gz").read_bytes()),
                               (f"{recording.url}/missing/{name}.gz", f"{recording.url}/official/{name}.gz"),
                               {name: ""}) for name in fake["contents"]))
    monkeypatch.setitem(DATASETS, "mnist", spec)
    gz_dir = write_files(tmp_path / "gz", fake["contents"], gzipped=True)
    return {**fake, "spec": spec, "gz_dir": gz_dir, "server": recording, "served": served}


def staging_leftovers(root: Path) -> list[Path]:
    return sorted(root.glob(f"{fetch.STAGING_PREFIX}*"))


# --- preparation from local sources ------------------------------------------------------------------------


def test_local_gz_source_is_unpacked_verified_and_loads_normalised(fake_mnist, tmp_path):
    root = tmp_path / "root"
    target = prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)
    assert target == root / "MNIST" / "raw"
    for name, data in fake_mnist["contents"].items():
        assert (target / name).read_bytes() == data
    assert staging_leftovers(root) == []
    spec = fake_mnist["spec"]
    for split, train in (("train", True), ("test", False)):
        x, y = load_tensors("mnist", root, train=train)
        images, labels = fake_mnist["arrays"][split]
        expected = (images[:, None].astype(np.float64) / 255 - spec.mean[0]) / spec.std[0]
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(images), 1, 28, 28)
        np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), labels)
    assert fake_mnist["server"].fetched() == []


def test_unpacked_files_in_torchvision_layout_are_accepted(fake_mnist, tmp_path):
    old_root = tmp_path / "old_torchvision_root"
    write_files(old_root / "MNIST" / "raw", fake_mnist["contents"])
    target = prepare_dataset("mnist", tmp_path / "root", sources=[old_root], download=False)
    assert sorted(p.name for p in target.iterdir()) == sorted(MNIST_NAMES)


def test_file_url_source_is_read_as_a_local_directory(fake_mnist, tmp_path):
    # A folder name that a file URL percent-encodes: the URL must be decoded to the path, not read literally.
    source = tmp_path / "local copy #1"
    fake_mnist["gz_dir"].rename(source)
    url = source.as_uri()
    assert "%20" in url and "%23" in url
    root = tmp_path / "root"
    target = prepare_dataset("mnist", root, sources=[url], download=False)
    assert target == root / "MNIST" / "raw"
    assert sorted(path.name for path in target.iterdir()) == sorted(MNIST_NAMES)
    for name, data in fake_mnist["contents"].items():
        assert (target / name).read_bytes() == data
    x, y = load_tensors("mnist", root, train=False)
    np.testing.assert_array_equal(y.numpy(), fake_mnist["arrays"]["test"][1])
    assert x.shape == (6, 1, 28, 28)
    assert fake_mnist["server"].fetched() == []  # nothing came from the mirrors: the folder held every file
    assert staging_leftovers(root) == []


def test_files_are_gathered_from_several_sources(fake_mnist, tmp_path):
    contents = fake_mnist["contents"]
    train_only = write_files(tmp_path / "a", {k: v for k, v in contents.items() if k.startswith("train")})
    test_only = write_files(tmp_path / "b", {k: v for k, v in contents.items() if k.startswith("t10k")}, True)
    prepare_dataset("mnist", tmp_path / "root", sources=[train_only, test_only], download=False)
    assert len(load_tensors("mnist", tmp_path / "root", train=False)[0]) == 6


def test_sources_are_tried_in_order_then_defaults_then_download(fake_mnist, tmp_path, monkeypatch):
    first, second, default = (tmp_path / name for name in ("first", "second", "default"))
    for directory in (first, second, default):
        directory.mkdir()
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(fake_mnist["spec"], default_sources=(str(default),)))
    with pytest.raises(DatasetError) as raised:
        prepare_dataset("mnist", tmp_path / "root", sources=[first, second], download=False)
    message = str(raised.value)
    positions = [message.index(f"source {first}"), message.index(f"source {second}"),
                 message.index(f"default source {default}"), message.index("download=False")]
    assert positions == sorted(positions)


def test_a_mirror_is_only_asked_when_earlier_sources_lack_the_files(fake_mnist, tmp_path):
    recording = fake_mnist["server"]
    mirror = f"{recording.url}/official/"
    prepare_dataset("mnist", tmp_path / "r1", sources=[fake_mnist["gz_dir"], mirror], download=False)
    assert recording.fetched() == []
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_dataset("mnist", tmp_path / "r2", sources=[empty, mirror], download=False)
    assert recording.fetched() == sorted(f"/official/{name}.gz" for name in MNIST_NAMES)


def test_a_corrupt_copy_in_one_source_is_skipped_for_a_good_one_later(fake_mnist, tmp_path):
    bad = write_files(tmp_path / "bad", fake_mnist["contents"])
    data = bytearray(fake_mnist["contents"]["train-images-idx3-ubyte"])
    data[100] ^= 0xFF
    (bad / "train-images-idx3-ubyte").write_bytes(bytes(data))
    target = prepare_dataset("mnist", tmp_path / "root", sources=[bad, fake_mnist["gz_dir"]], download=False)
    assert (target / "train-images-idx3-ubyte").read_bytes() == fake_mnist["contents"]["train-images-idx3-ubyte"]


def test_a_source_given_as_a_single_string_is_refused(fake_mnist, tmp_path):
    with pytest.raises(TypeError, match="sources"):
        prepare_dataset("mnist", tmp_path, sources=str(fake_mnist["gz_dir"]))


def test_unknown_dataset_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="fashion_mnist"):
        prepare_dataset("fashoin_mnist", tmp_path)


# --- missing and corrupt data --------------------------------------------------------------------------------


def test_missing_data_without_download_says_what_to_put_where(fake_mnist, tmp_path):
    with pytest.raises(DatasetError) as raised:
        load_tensors("mnist", tmp_path / "root", train=True, download=False)
    message = str(raised.value)
    for expected in (*MNIST_NAMES, "download=False", "sources=[", str(tmp_path / "root" / "MNIST" / "raw")):
        assert expected in message
    assert fake_mnist["server"].fetched() == []


def test_missing_fashion_mnist_says_which_package_to_install(tmp_path, monkeypatch):
    spec = dataclasses.replace(DATASETS["fashion_mnist"], default_sources=(str(tmp_path / "nowhere"),))
    monkeypatch.setitem(DATASETS, "fashion_mnist", spec)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        prepare_dataset("fashion_mnist", tmp_path / "root", download=False)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_prepared_file_is_reported_by_name(fake_mnist, tmp_path, damage):
    root = tmp_path / "root"
    target = prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)
    victim = target / "train-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[:-3]
    else:
        data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte is corrupt"):
        load_tensors("mnist", root, train=True, sources=[fake_mnist["gz_dir"]])


def test_full_verification_finds_a_flip_that_kept_size_and_mtime(fake_mnist, tmp_path):
    root = tmp_path / "root"
    target = prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)
    victim = target / "t10k-images-idx3-ubyte"
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[500] ^= 0x10
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte is corrupt"):
        prepare_dataset("mnist", root, full_verify=True)


def test_prepared_data_is_trusted_from_its_record_without_rehashing(fake_mnist, tmp_path, monkeypatch):
    root = tmp_path / "root"
    prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)

    def no_hashing(*args, **kwargs):
        raise AssertionError("prepared files were hashed again")

    monkeypatch.setattr(integrity, "copy_with_digest", no_hashing)
    assert load_tensors("mnist", root, train=True, download=False)[0].shape[0] == 12


def test_an_old_torchvision_cache_would_shadow_the_raw_files_and_is_refused(fake_mnist, tmp_path):
    root = tmp_path / "root"
    prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)
    (root / "MNIST" / "processed").mkdir()
    (root / "MNIST" / "processed" / "training.pt").write_bytes(b"")
    with pytest.raises(DatasetError, match="processed"):
        load_tensors("mnist", root, train=True)


# --- downloads ---------------------------------------------------------------------------------------------


def test_official_urls_are_downloaded_after_a_dead_mirror(fake_mnist, tmp_path):
    root = tmp_path / "root"
    target = prepare_dataset("mnist", root)
    for name, data in fake_mnist["contents"].items():
        assert (target / name).read_bytes() == data
    assert fake_mnist["server"].fetched() == sorted(
        [f"/missing/{name}.gz" for name in MNIST_NAMES] + [f"/official/{name}.gz" for name in MNIST_NAMES])
    assert staging_leftovers(root) == []


def test_a_download_with_the_wrong_content_is_never_installed(fake_mnist, tmp_path):
    other = make_idx_set(seed=1, n_train=12, n_test=6, classes=10)
    write_files(fake_mnist["served"] / "official", other["contents"], gzipped=True)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="rejected"):
        prepare_dataset("mnist", root)
    assert not (root / "MNIST" / "raw").exists()
    assert staging_leftovers(root) == []


def test_an_interrupted_download_leaves_nothing_a_later_call_accepts(fake_mnist, tmp_path, monkeypatch):
    root = tmp_path / "root"
    real_fetch = fetch.fetch_url
    partial_files = []

    def dies_halfway(url: str, destination: Path) -> None:
        real_fetch(url, destination)
        data = destination.read_bytes()
        destination.write_bytes(data[: len(data) // 2])
        partial_files.append(destination)
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(fetch, "fetch_url", dies_halfway)
    with pytest.raises(DatasetError, match="download failed"):
        prepare_dataset("mnist", root)
    assert partial_files and not any(path.exists() for path in partial_files)
    assert staging_leftovers(root) == []
    assert not (root / "MNIST" / "raw").exists()
    monkeypatch.setattr(fetch, "fetch_url", real_fetch)
    with pytest.raises(DatasetError):
        prepare_dataset("mnist", root, download=False)
    assert (prepare_dataset("mnist", root) / "train-images-idx3-ubyte").read_bytes() == \
        fake_mnist["contents"]["train-images-idx3-ubyte"]


def test_leftovers_of_a_killed_run_are_ignored_and_removed(fake_mnist, tmp_path):
    root = tmp_path / "root"
    stale = root / f"{fetch.STAGING_PREFIX}mnist-killed"
    stale.mkdir(parents=True)
    (stale / "train-images-idx3-ubyte").write_bytes(fake_mnist["contents"]["train-images-idx3-ubyte"][:100])
    with pytest.raises(DatasetError):
        prepare_dataset("mnist", root, download=False)
    assert not stale.exists()
    prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)


# --- checksums and sample limits -----------------------------------------------------------------------------


def reference_checksum(contents: dict[str, bytes]) -> str:
    lines = "".join(f"{name}\t{len(data)}\t{sha256(data)}\n" for name, data in sorted(contents.items()))
    return sha256(lines.encode())


def test_dataset_checksum_identifies_the_files(fake_mnist, tmp_path):
    root = tmp_path / "root"
    prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)
    assert dataset_checksum("mnist", root) == reference_checksum(fake_mnist["contents"])


def test_max_samples_takes_a_prefix_and_rejects_nonsense(fake_mnist, tmp_path):
    root = tmp_path / "root"
    prepare_dataset("mnist", root, sources=[fake_mnist["gz_dir"]], download=False)
    x_all, y_all = load_tensors("mnist", root, train=True)
    x_five, y_five = load_tensors("mnist", root, train=True, max_samples=5)
    assert torch.equal(x_five, x_all[:5]) and torch.equal(y_five, y_all[:5])
    assert len(load_tensors("mnist", root, train=True, max_samples=1000)[0]) == 12
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_samples"):
            load_tensors("mnist", root, train=True, max_samples=bad)


def test_image_folder_datasets_are_not_loaded_as_tensors(tmp_path):
    with pytest.raises(ValueError, match="load_dataset"):
        load_tensors("tiny_imagenet", tmp_path, train=True)


# --- EMNIST: unpacked files are trusted only through the official zip ----------------------------------------

EMNIST_NAMES = tuple(f"emnist-balanced-{split}-{kind}" for split in ("train", "test")
                     for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


@pytest.fixture
def fake_emnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    fake = make_idx_set(seed=2, n_train=20, n_test=8, classes=47, names=EMNIST_NAMES)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in fake["contents"].items():
            bundle.writestr(f"gzip/{name}.gz", gzip.compress(data, mtime=0))
        bundle.writestr("gzip/emnist-letters-train-labels-idx1-ubyte.gz", gzip.compress(b"decoy", mtime=0))
    source = tmp_path / "emnist_source"
    source.mkdir()
    (source / "gzip.zip").write_bytes(buffer.getvalue())
    real = DATASETS["emnist"]
    spec = dataclasses.replace(
        real, split_sizes=(20, 8),
        files=tuple(RawFile(name, len(data)) for name, data in fake["contents"].items()),
        archives=(dataclasses.replace(real.archives[0], md5=md5(buffer.getvalue()), urls=()),))
    monkeypatch.setitem(DATASETS, "emnist", spec)
    return {**fake, "spec": spec, "source": source}


def test_emnist_comes_out_of_the_verified_zip_upright(fake_emnist, tmp_path):
    root = tmp_path / "root"
    target = prepare_dataset("emnist", root, sources=[fake_emnist["source"]], download=False)
    assert sorted(p.name for p in target.iterdir()) == sorted(EMNIST_NAMES)
    x, y = load_tensors("emnist", root, train=True)
    images, labels = fake_emnist["arrays"]["train"]
    upright = images.transpose(0, 2, 1)[:, None].astype(np.float64) / 255
    np.testing.assert_allclose(x.numpy(), (upright - 0.1751) / 0.3332, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), labels)
    assert fake_emnist["spec"].num_classes == 47


def test_emnist_unpacked_files_without_the_zip_are_not_trusted(fake_emnist, tmp_path):
    loose = write_files(tmp_path / "loose", fake_emnist["contents"])
    with pytest.raises(DatasetError, match="no official checksum.*gzip.zip"):
        prepare_dataset("emnist", tmp_path / "root", sources=[loose], download=False)


def test_emnist_zip_with_a_wrong_md5_is_rejected(fake_emnist, tmp_path, monkeypatch):
    spec = fake_emnist["spec"]
    wrong = dataclasses.replace(spec, archives=(dataclasses.replace(spec.archives[0], md5="0" * 32),))
    monkeypatch.setitem(DATASETS, "emnist", wrong)
    with pytest.raises(DatasetError, match="archive md5"):
        prepare_dataset("emnist", tmp_path / "root", sources=[fake_emnist["source"]], download=False)


def test_emnist_files_are_re_verified_against_their_recorded_checksum(fake_emnist, tmp_path):
    root = tmp_path / "root"
    target = prepare_dataset("emnist", root, sources=[fake_emnist["source"]], download=False)
    victim = target / "emnist-balanced-test-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="emnist-balanced-test-labels-idx1-ubyte is corrupt"):
        prepare_dataset("emnist", root)
