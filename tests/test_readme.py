"""The README stays in step with the code: every dataset is listed and the set-up commands are there."""

from __future__ import annotations

from pathlib import Path

from common.datasets import DATASETS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_registered_dataset_is_in_the_readme():
    missing = [name for name in DATASETS if f"`{name}`" not in README]
    assert not missing, f"README.md does not list {missing}"


def test_readme_shows_the_two_set_up_commands():
    assert "make demo" in README and "make test" in README
