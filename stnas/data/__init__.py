"""Data: ImageFolder loaders on NVIDIA DALI (PIL fallback) and the built-in demo dataset."""
from stnas.data.demo import data_root, demo_dataset
from stnas.data.errors import DataError
from stnas.data.folder import ImageFolderSplit
from stnas.data.loader import IMAGENET_MEAN, IMAGENET_STD, dali_available, make_loader

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataError", "data_root", "ImageFolderSplit", "dali_available", "demo_dataset",
           "make_loader"]
