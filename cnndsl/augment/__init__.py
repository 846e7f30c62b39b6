"""Data augmentation for training: batched Numba kernels, deterministic under a seed.

    from cnndsl.augment import Pipeline, make_augmentation, REGISTRY
    pipe = Pipeline([make_augmentation("hflip", p=0.5),
                     make_augmentation("random_crop", size=32, padding=4)], seed=0)
    pipe.validate((3, 32, 32))            # -> [] or problems for diagnostics
    xb = pipe.apply(xb, indices, epoch)   # training batches only

See ops.py (the eight augmentations), pipeline.py, kernels.py, rng.py (the hash).
"""
from cnndsl.augment.ops import (REGISTRY, Augmentation, ColorJitter, Grayscale, HFlip, RandomCrop, Rotate,
                                Scale, Translate, VFlip, crop_images, from_config, jitter_images,
                                make_augmentation, rotate_images)
from cnndsl.augment.pipeline import Pipeline

__all__ = [
    "REGISTRY", "Augmentation", "ColorJitter", "Grayscale", "HFlip", "Pipeline", "RandomCrop", "Rotate",
    "Scale", "Translate", "VFlip", "crop_images", "from_config", "jitter_images", "make_augmentation",
    "rotate_images",
]
