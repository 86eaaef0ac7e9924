"""Face datasets: identity folders and splits (identities.py), the LFW protocol files (lfw.py),
domain shifts of chips (degrade.py). Aligning images into chips is the chip cache's job
(pyfacedlib.chipcache)."""
from __future__ import annotations

from .degrade import degrade
from .identities import (
                         IMAGE_SUFFIXES,
                         IdentityDataset,
                         identity_folders,
                         identity_split,
                         image_files,
                         labelled_files,
                         labelled_inputs,
                         list_files,
)
from .lfw import Pair, lfw_image, pair_images, read_lfw_pairs, read_lfw_people
from .root import DATA_ENV, data_root

__all__ = ["DATA_ENV", "IMAGE_SUFFIXES", "IdentityDataset", "Pair", "data_root", "degrade", "identity_folders",
           "identity_split", "image_files", "labelled_files", "labelled_inputs", "list_files",
           "lfw_image", "pair_images", "read_lfw_people", "read_lfw_pairs"]
