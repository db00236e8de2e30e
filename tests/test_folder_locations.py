"""folder_locations: documented defaults, each overridden by its environment variable at call time."""

from __future__ import annotations

from pathlib import Path

import pytest

import folder_locations as fl

VARIABLES = ["OOD_REPRO_DATA", "OOD_REPRO_TINY_IMAGES", "OOD_REPRO_WEIGHTS", "OOD_REPRO_RUNS"]


@pytest.fixture()
def clean_environment(monkeypatch):
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_defaults(clean_environment):
    home_cache = Path.home() / ".cache" / "ood-repro"
    assert fl.data_root() == home_cache / "data"
    assert fl.tiny_images_root() == home_cache / "data" / "tiny-images"
    assert fl.weights_root() == home_cache / "weights"
    assert fl.runs_root() == Path(fl.__file__).resolve().parent / "runs"


def test_environment_overrides_each_location(clean_environment, tmp_path):
    clean_environment.setenv("OOD_REPRO_DATA", str(tmp_path / "d"))
    assert fl.tiny_images_root() == tmp_path / "d" / "tiny-images", "tiny images follow the data root"
    functions = [fl.data_root, fl.tiny_images_root, fl.weights_root, fl.runs_root]
    for variable, function in zip(VARIABLES, functions, strict=True):
        clean_environment.setenv(variable, str(tmp_path / variable))
        assert function() == tmp_path / variable


def test_dataset_folders_follow_the_locations(clean_environment, tmp_path):
    from common.datasets import dataset_folder

    clean_environment.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    clean_environment.setenv("OOD_REPRO_TINY_IMAGES", str(tmp_path / "tiny"))
    assert dataset_folder("cifar10") == tmp_path / "data" / "cifar10"
    assert dataset_folder("tiny-images-300k") == tmp_path / "tiny"
    assert dataset_folder("cifar10", tmp_path / "other") == tmp_path / "other" / "cifar10"
