"""A paper that refuses ``--epochs`` (only for that: its cells are the toy paper's, under the wrong name)."""

from __future__ import annotations

from dataclasses import replace

from common.cells import Paper, Settings
from common.errors import UsageError
from tests.helpers import toy_paper


def configure(settings: Settings) -> toy_paper.ToyConfig:
    if settings.epochs is not None:
        raise UsageError("strict trains nothing: --epochs does not apply")
    return toy_paper.configure(settings)


PAPER = Paper("strict", "Strict et al.", tuple(replace(e, configure=configure) for e in toy_paper.PAPER.experiments))
