"""Where data, pretrained weights and runs live: the one place in the suite that names a path.

Every location has a default and an environment variable that overrides it:

==================  ==============================  ===================================
location            environment variable            default
==================  ==============================  ===================================
data root           ``OOD_REPRO_DATA``              ``~/.cache/ood-repro/data``
tiny-images root    ``OOD_REPRO_TINY_IMAGES``       ``<data root>/tiny-images``
pretrained weights  ``OOD_REPRO_WEIGHTS``           ``~/.cache/ood-repro/weights``
runs / output root  ``OOD_REPRO_RUNS``              ``<repository>/runs``
checksum overrides  ``OOD_REPRO_CHECKSUMS``         none
==================  ==============================  ===================================

Data and weights default to the user's home (shared by every checkout); runs default to the repository, next to
the code that produced them, which is where ``tensorboard --logdir runs`` looks. Values are read on every call, so
tests and users can change the environment at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent
CACHE_HOME = Path.home() / ".cache" / "ood-repro"


def _from_env(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else default


def data_root() -> Path:
    """Folder holding one sub-folder per dataset, each laid out as its owners distribute it."""
    return _from_env("OOD_REPRO_DATA", CACHE_HOME / "data")


def tiny_images_root() -> Path:
    """Folder holding ``tiny_images.bin``, its auxiliary files and the subsets ``create_tiny.py`` writes."""
    return _from_env("OOD_REPRO_TINY_IMAGES", data_root() / "tiny-images")


def weights_root() -> Path:
    """Folder holding pretrained weight files (EfficientNet, WRN-40-2, ...)."""
    return _from_env("OOD_REPRO_WEIGHTS", CACHE_HOME / "weights")


def runs_root() -> Path:
    """Folder under which every run writes ``<paper>/<experiment>/<run>/`` (tensorboard, checkpoints, results)."""
    return _from_env("OOD_REPRO_RUNS", REPOSITORY / "runs")


def checksum_overrides() -> Path | None:
    """A ``sha256sum``-format file whose checksums replace the pinned ones of the weight files it names, or None.

    Unset by default; ``python -m common.fixtures`` exports it so that its stand-in weight files load.
    """
    value = os.environ.get("OOD_REPRO_CHECKSUMS")
    return Path(value).expanduser() if value else None
