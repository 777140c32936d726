"""The paper's datasets behind one interface: fetch or locate the files, verify them, load them.

Typical use (Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package, found by default)::

    prepare_dataset("fashion_mnist", "data")
    x, y = load_tensors("fashion_mnist", "data", train=True)

See :mod:`cht.data.specs` for where every checksum comes from.
"""

from cht.data.folders import arrange_val_folder
from cht.data.load import default_transform, load_dataset, load_tensors
from cht.data.prepare import dataset_checksum, describe, prepare_dataset
from cht.data.specs import DATASETS, Archive, DatasetError, DatasetSpec, RawFile, available_datasets

__all__ = [
    "DATASETS", "Archive", "DatasetError", "DatasetSpec", "RawFile", "arrange_val_folder", "available_datasets",
    "dataset_checksum", "default_transform", "describe", "load_dataset", "load_tensors", "prepare_dataset",
]
