"""What each Gaussian AD cell costs (:class:`common.cells.Cost`): nothing is trained, so no steps; a features cell
passes one category's train and test images through the backbone once, an augmented-features cell its training
images ``augment_passes`` times, and a fit cell no image (closed-form fits on stored features).

Sizes: the published MVTec AD counts per category (``common.datasets.sizes``), or the generated set's
(:mod:`gaussian_ad.synthetic_mvtec`: ``n_train`` good training images, ``n_test_good`` good test images and
``n_test_defect`` per defect type).
"""

from __future__ import annotations

from common.cells import Cost
from common.datasets import sizes
from gaussian_ad.config import GaussianADConfig
from gaussian_ad.synthetic_mvtec import DEFECTS


def category_images(config: GaussianADConfig, category: str, split: str) -> int:
    """Images of ``split`` of one category."""
    if not config.synthetic:
        return sizes.size("mvtec", split, category=category)
    return config.n_train if split == "train" else config.n_test_good + len(DEFECTS) * config.n_test_defect


def features_cost(config: GaussianADConfig, category: str, augmented: bool) -> Cost:
    """A features cell: the train and test images once, or the training images once per augmented pass."""
    if augmented:
        return Cost(images=config.augment_passes * category_images(config, category, "train"))
    return Cost(images=sum(category_images(config, category, split) for split in ("train", "test")))
