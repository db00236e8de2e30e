"""λ follows the number of memory slots N: every cell's memory at both scales is valid, and the resize rule on
hand-computed cases. Models are built and fed random shots, never trained."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from common.cells import RunContext, Settings
from memae.config import MemoryConfig, configure
from memae.experiments import IMAGE_VARIANTS, few_shot_model, image_memory, source_model
from memae.few_shot import STRATEGIES, copy_best_fitting, copy_samples
from memae.memory import MemoryModule, check_shrink_threshold, resized_threshold
from memae.models import ARCHITECTURES, build_model

COPYING = {"copy_samples", "conditional_copy_best_fitting"}  # the strategies whose memory has one slot per shot


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _memories(model: torch.nn.Module) -> list[MemoryModule]:
    return [module for module in model.modules() if isinstance(module, MemoryModule)]


def _check(threshold: float, num_slots: int, similarity: str) -> None:
    """The threshold check, with its "inert λ" warning as an error; every configured λ is 1/N (0: no shrinkage)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_shrink_threshold(threshold, num_slots, similarity)
    if threshold:
        assert threshold == pytest.approx(1 / num_slots, rel=1e-12)


@pytest.mark.parametrize("scale", ["demo", "paper"])
def test_every_cell_memory_passes_the_threshold_check(scale: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = configure(Settings(scale=scale))
    for setting in config.image_table:
        for label in IMAGE_VARIANTS:
            memory = image_memory(setting, label)
            _check(memory.shrink_threshold, memory.num_slots, memory.similarity)
    ctx = RunContext("memae", "conditional", Settings(scale=scale), config, tmp_path, torch.device("cpu"))
    for setting in config.conditional:
        memory, few = setting.memory, setting.few_shot
        _check(memory.shrink_threshold, memory.num_slots, memory.similarity)
        spec = ARCHITECTURES[setting.data.architecture]
        assert spec.latent_shape[1:] == (1, 1)  # flat: a copying strategy makes one slot per shot
        for group in setting.groups:  # the conditional AE of each group builds (it has no memory)
            assert not _memories(build_model(setting.data.architecture, "cae", num_conditions=len(group)))
        sources = {source: source_model(setting, source, ctx).eval() for source in ("single", "conditional")}
        assert [m.num_slots for m in _memories(sources["conditional"])] == [memory.num_slots] * len(few.source_group)
        for name, strategy in STRATEGIES.items():
            for shots in few.shots:
                images = torch.randn(shots, *spec.input_shape)
                model = few_shot_model(setting, name, sources[strategy.source], images)
                (new,) = _memories(model)
                assert new.num_slots == (shots if name in COPYING else memory.num_slots), (name, shots)
                threshold = float(new.shrink_threshold)
                _check(threshold, new.num_slots, new.similarity)
                assert threshold == (0.0 if new.num_slots == 1 else pytest.approx(1 / new.num_slots))
                with torch.no_grad():
                    reconstruction, out = model.eval()(images)
                assert reconstruction.shape == images.shape
                # λ = 1/N keeps the weights above the mean 1/N, so ŵ sums to 1 unless all N are equal: only when
                # N > 1 slots are all the same (Copy Best Fitting picked one slot for every shot: README)
                if new.num_slots == 1 or len(torch.unique(new.memory, dim=0)) > 1:
                    weights = out.attention.flatten(2).sum(dim=1)
                    torch.testing.assert_close(weights, torch.ones(shots, 1), rtol=0, atol=1e-5)


def test_resized_threshold_on_hand_computed_cases() -> None:
    assert resized_threshold(0.1, 10, 100) == pytest.approx(0.01)  # 1/10 → 1/100
    assert resized_threshold(0.008, 125, 10) == pytest.approx(0.1)  # 1/125 → 1/10
    assert resized_threshold(0.3, 10, 20) == pytest.approx(0.15)  # 3/N stays 3/N
    assert resized_threshold(0.0, 10, 100) == 0.0  # no shrinkage stays off
    assert resized_threshold(0.1, 10, 1) == 0.0  # one slot: its weight is always 1
    assert resized_threshold(0.07, 10, 10) == 0.07  # unchanged N, unchanged λ
    assert resized_threshold(0.1, 10, 100, "keep") == 0.1  # C-MemAE code
    with pytest.raises(ValueError, match="threshold_on_resize must be one of scale, keep"):
        resized_threshold(0.1, 10, 100, "1/N")
    with pytest.raises(ValueError, match="threshold_on_resize must be one of"):
        MemoryConfig(10, 0.1, threshold_on_resize="fixed")


def test_copying_strategies_set_lambda_to_one_over_the_new_n() -> None:
    torch.manual_seed(0)
    single = build_model("digits-flat", "memae", num_slots=10, shrink_threshold=0.1).eval()
    conditional = build_model("digits-flat", "cmemae", num_slots=10, shrink_threshold=0.1, num_conditions=2).eval()
    shots = torch.randn(100, 1, 16, 16)
    copied, best = copy_samples(single, shots).bottleneck, copy_best_fitting(conditional, shots).bottleneck
    assert copied.num_slots == best.num_slots == 100
    assert float(copied.shrink_threshold) == float(best.shrink_threshold) == pytest.approx(0.01)
    four = copy_samples(single, shots[:4]).bottleneck
    assert (four.num_slots, float(four.shrink_threshold)) == (4, pytest.approx(0.25))
    # C-MemAE's rule keeps λ = 0.1, above the largest weight cosine addressing gives over 100 slots:
    largest = math.exp(2) / (math.exp(2) + 99)
    assert 0.069 < largest < 0.1
    with pytest.raises(ValueError, match="at or above the largest weight"):
        copy_samples(single, shots, "keep")
    kept = copy_samples(single, shots[:4], "keep").bottleneck
    assert (kept.num_slots, float(kept.shrink_threshold)) == (4, pytest.approx(0.1))
