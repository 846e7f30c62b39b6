"""The data-set formats users bring, each loaded into a `Dataset` (a `ClassDataset`: it also
knows its class names when the format says them: image folders, CIFAR-10; else None).

    load_dataset(spec, shape, split)    any format of `registry.FORMATS`, picked by path, or 'digits'
    dataset_splits(spec)                the splits a spec provides ('train', 'test'), () for one file
    load_idx(images, labels)            MNIST-format IDX files (optionally .gz)        idx.py
    load_idx_folder(dir, split)         a folder of train-images-idx3-ubyte[.gz], t10k-...
    load_cifar10_bin(path)              CIFAR-10 binary batches                         cifar.py
    load_cifar10_folder(dir, split)     a folder of data_batch_*.bin / test_batch.bin
    load_image_folder(dir, shape)       PNG/JPEG images, one subfolder per class        image_folder.py
    load_npz_dataset(path, shape)       a .npz archive with x/y (or images/labels)      npz.py

Every problem with a file raises a `CnnError` (via `file_error`) naming the file, what was
expected and what was found. Images come back as float32 (N, C, H, W) in [0, 1], labels as
int64 class indices, checked by `common.check_labels` (the loss ops' class-index rule; the model
checks them again against each loss where they enter training).

Pickled data (the CIFAR-10 "python version") is never read: unpickling a data file can run
arbitrary code. It is recognised and the user is asked for the binary version.

Splits: folder formats hold a 'train' and a 'test' split (image folders may have train/ and
test/ (or val/) subfolders); a single file is the whole data set whatever split is asked for,
so a trainer holds out part of it when there is no test split.
"""
from cnndsl.data.formats.cifar import CIFAR10_CLASSES, load_cifar10_bin, load_cifar10_folder
from cnndsl.data.formats.common import ClassDataset, check_labels
from cnndsl.data.formats.idx import load_idx, load_idx_folder
from cnndsl.data.formats.image_folder import load_image_folder
from cnndsl.data.formats.npz import load_npz_dataset
from cnndsl.data.formats.registry import FORMATS, Format, dataset_splits, find_format, load_dataset

__all__ = ["CIFAR10_CLASSES", "FORMATS", "ClassDataset", "Format", "check_labels", "dataset_splits", "find_format",
           "load_cifar10_bin", "load_cifar10_folder", "load_dataset", "load_idx", "load_idx_folder",
           "load_image_folder", "load_npz_dataset"]
