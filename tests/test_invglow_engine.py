"""InvGlow Ignite engines: loss values, skipped non-finite steps, evaluator alignment, fit and resume, data helpers."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.datasets import ImageSet, load
from common.handlers import CHECKPOINT_DIR, SKIPPED_STEPS, checkpoints_newest_first
from common.tiny_builder import CHUNK_SIZE
from common.transforms import bin_centres
from invglow.config import TrainConfig
from invglow.data import eval_sets, tiny_split_rows, to_size, write_demo_tiny_binary
from invglow.engine import (
    FINAL_MODEL,
    LIKELIHOODS,
    OutlierLossConfig,
    create_evaluator,
    create_trainer,
    eval_loader,
    fit,
    forward_on_finite_examples,
    train_transform,
)
from invglow.losses import nll_nats, outlier_loss, wrong_class_loss
from invglow.models import ClassConditionalGlow, Glow, initialize_actnorms
from invglow.scores import anomaly_scores, auroc_percent


def _model(seed: int = 0) -> Glow:
    torch.manual_seed(seed)
    model = Glow((3, 8, 8), n_scales=2, steps=1, hidden=8)
    initialize_actnorms(model, torch.rand(32, 3, 8, 8) - 0.5)
    return model


def test_trainer_loss_is_nll_plus_outlier_loss() -> None:
    model = _model()
    base = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():  # make the finetuned model differ from the base
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    images, outliers = torch.rand(8, 3, 8, 8) - 0.5, torch.rand(8, 3, 8, 8) - 0.5
    config = OutlierLossConfig("class", weight=50.0, temperature=20.0)
    with torch.no_grad():
        expected_nll = nll_nats(model(images)[1].sum(1), 192).mean()
        expected_out = outlier_loss(model(outliers)[1].sum(1), base(outliers)[1].sum(1), 50.0, 20.0)
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)
    trainer = create_trainer(model, optimizer, base_model=base, outlier=config)
    labels = torch.zeros(8, dtype=torch.int64)
    trainer.run([((images, labels), (outliers, labels))], max_epochs=1)
    output = trainer.state.output
    assert output["outlier_loss"] == pytest.approx(expected_out.item(), rel=1e-5)
    assert output["loss"] == pytest.approx((expected_nll + expected_out).item(), rel=1e-5)
    assert output["bpd"] == pytest.approx(expected_nll.item() / (192 * math.log(2)), rel=1e-5)


def test_trainer_skips_and_counts_non_finite_steps() -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    trainer = create_trainer(model, torch.optim.Adamax(model.parameters(), lr=1e-3))
    bad = torch.full((4, 3, 8, 8), float("nan"))
    trainer.run([(bad, torch.zeros(4, dtype=torch.int64))], max_epochs=1)
    assert getattr(trainer.state, SKIPPED_STEPS) == 1
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def _step_once(model: Glow, batch: tuple, **options) -> object:
    trainer = create_trainer(model, torch.optim.Adamax(model.parameters(), lr=1e-2), **options)
    trainer.run([batch], max_epochs=1)
    return trainer.state


@pytest.mark.parametrize("with_outliers", [False, True])
def test_non_finite_examples_are_dropped_and_the_batch_recomputed(with_outliers: bool) -> None:
    """The step equals a step on the finite examples alone (the original's get_nlls), inliers and outliers."""
    generator = torch.Generator().manual_seed(0)
    images, outliers = torch.rand(8, 3, 8, 8, generator=generator) - 0.5, torch.rand(8, 3, 8, 8, generator=generator)
    labels = torch.arange(8)
    bad_in, bad_out = torch.tensor([1, 6]), torch.tensor([0, 2, 3])
    images_with_nan, outliers_with_nan = images.clone(), outliers.clone() - 0.5
    images_with_nan[bad_in, 0, 2, 2] = float("nan")
    outliers_with_nan[bad_out, 1, 0, 0] = float("inf")
    keep_in, keep_out = ~torch.isin(labels, bad_in), ~torch.isin(labels, bad_out)
    base = _model(1).requires_grad_(False)
    options = {"base_model": base, "outlier": OutlierLossConfig("class", 50.0, 20.0)} if with_outliers else {}

    def batch(inliers: torch.Tensor, kept: torch.Tensor, extra: torch.Tensor, extra_kept: torch.Tensor) -> tuple:
        first = (inliers[kept], labels[kept])
        return (first, (extra[extra_kept], labels[extra_kept])) if with_outliers else first

    recomputed, reference = _model(), _model()
    state = _step_once(recomputed, batch(images_with_nan, labels >= 0, outliers_with_nan, labels >= 0), **options)
    expected = _step_once(reference, batch(images, keep_in, outliers - 0.5, keep_out), **options)
    assert getattr(state, SKIPPED_STEPS) == 0
    assert state.output["non_finite_examples"] == 2 + 3 * with_outliers
    assert state.output["loss"] == pytest.approx(expected.output["loss"], rel=1e-6)
    for (name, ours), theirs in zip(recomputed.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(("n_bad", "mode"), [(2, "skip_step"), (6, "recompute")])
def test_step_is_skipped_without_recompute_or_with_a_quarter_left(n_bad: int, mode: str) -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    images = torch.rand(8, 3, 8, 8) - 0.5
    images[:n_bad] = float("nan")
    state = _step_once(model, (images, torch.zeros(8, dtype=torch.int64)), non_finite_examples=mode)
    assert getattr(state, SKIPPED_STEPS) == 1
    assert state.output["non_finite_examples"] == 0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    with pytest.raises(ValueError, match="non_finite_examples"):
        create_trainer(model, torch.optim.Adamax(model.parameters()), non_finite_examples="drop")


def test_recompute_repeats_while_new_examples_turn_non_finite() -> None:
    """As the original's recursion: each forward may expose new non-finite examples; it stops at <= a quarter."""
    calls = []

    def forward(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, None]:
        calls.append(labels.tolist())
        values = images.clone()
        if len(images) > 5:
            values[0] = float("nan")  # the first example of any batch larger than 5 fails
        return values, None

    (values, _), labels = forward_on_finite_examples(forward, torch.arange(8.0), torch.arange(8))
    assert calls == [list(range(8)), list(range(1, 8)), list(range(2, 8)), list(range(3, 8))]
    assert labels.tolist() == [3, 4, 5, 6, 7] and torch.equal(values, torch.arange(3.0, 8.0))
    calls.clear()
    few = torch.tensor([float("nan")] * 6 + [1.0, 2.0])
    (values, _), labels = forward_on_finite_examples(lambda x, y: (x, None), few, torch.arange(8))
    assert len(labels) == 8 and values.isnan().sum() == 6  # 2 finite = a quarter: left to the step skip
    (values, _), labels = forward_on_finite_examples(forward, torch.arange(8.0), torch.arange(8), recompute=False)
    assert len(labels) == 8 and values.isnan().sum() == 1


def test_class_outlier_loss_needs_the_tiny_model() -> None:
    model = _model()
    with pytest.raises(ValueError, match="Tiny"):
        create_trainer(model, torch.optim.Adamax(model.parameters()), outlier=OutlierLossConfig("class"))


def test_evaluator_aligns_likelihoods_with_images_and_scores_them() -> None:
    model, base = _model(0), _model(1)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    evaluation = eval_sets("in", images[:25], {"out": images[25:]}, batch_size=8)
    evaluator = create_evaluator(model, evaluation, base)
    evaluator.run(eval_loader(evaluation, 16, torch.device("cpu")))
    likelihoods = evaluator.state.metrics[LIKELIHOODS]
    fine, base_lp = likelihoods["fine"], likelihoods["base"]
    with torch.no_grad():
        assert torch.allclose(fine, model(bin_centres(images))[1], atol=1e-4)
        assert torch.allclose(base_lp, base(bin_centres(images))[1], atol=1e-4)
    ratio = anomaly_scores("ratio", fine, base_lp).values
    expected = auroc_percent(ratio[:25], {"out": ratio[25:]})["out"]
    assert evaluator.state.metrics["AUROC-ratio/out"] == pytest.approx(expected)
    assert {"bpd/in", "bpd/out", "AUROC-raw/out", "AUROC-final_scale/out", "non_finite"} <= set(evaluator.state.metrics)
    alone = create_evaluator(model, evaluation)  # without the Tiny model: no ratio
    alone.run(eval_loader(evaluation, 16, torch.device("cpu")))
    assert set(alone.state.metrics[LIKELIHOODS]) == {"fine"} and "AUROC-ratio/out" not in alone.state.metrics


_FIT = TrainConfig(epochs=2, batch_size=16, eval_batch_size=64, init_batches=1, translate_pixels=1)


def _fit(folder: Path, epochs: int) -> tuple[Glow, dict]:
    """A fresh 8×8 Glow trained from scratch in ``folder`` for ``epochs`` epochs (64 images, 4 steps per epoch)."""
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = Glow((3, 8, 8), n_scales=2, steps=1, hidden=8)
    train = dataclasses.replace(_FIT, epochs=epochs)
    evaluation = eval_sets("a", images[:16], {"b": images[16:32]}, batch_size=8)
    options = {"seed": 3, "flip": True, "device": torch.device("cpu"), "progress": False}
    metrics = fit(model, ImageSet(images, torch.zeros(64, dtype=torch.int64)), evaluation, train, folder, **options)
    return model, metrics


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(tensor, b.state_dict()[name]) for name, tensor in a.state_dict().items())


def test_fit_resumes_from_the_newest_intact_checkpoint_as_if_uninterrupted(tmp_path: Path) -> None:
    whole, whole_metrics = _fit(tmp_path / "whole", 2)
    interrupted, _ = _fit(tmp_path / "parts", 1)
    (tmp_path / "parts" / FINAL_MODEL).unlink()  # as if killed after the first epoch's checkpoint
    resumed, resumed_metrics = _fit(tmp_path / "parts", 2)
    assert _same_weights(whole, resumed) and not _same_weights(whole, interrupted)
    assert resumed_metrics["AUROC-raw/b"] == whole_metrics["AUROC-raw/b"]
    saved = torch.load(tmp_path / "parts" / FINAL_MODEL, weights_only=True)
    assert all(torch.equal(tensor, saved[name]) for name, tensor in whole.state_dict().items())

    # a truncated newest checkpoint (a crash while writing) is passed over for the one before it
    newest, _ = checkpoints_newest_first(tmp_path / "whole")  # epochs 2 and 1
    newest.write_bytes(newest.read_bytes()[:100])
    (tmp_path / "whole" / FINAL_MODEL).unlink()
    with pytest.warns(UserWarning, match="trying an older checkpoint"):
        again, _ = _fit(tmp_path / "whole", 2)
    assert _same_weights(whole, again)


def test_fit_does_not_train_a_finished_model_again(tmp_path: Path) -> None:
    model, metrics = _fit(tmp_path, 2)
    checkpoints = {path: path.stat().st_mtime_ns for path in (tmp_path / CHECKPOINT_DIR).iterdir()}
    again, metrics_again = _fit(tmp_path, 2)
    assert _same_weights(model, again) and metrics_again["skipped_steps"] == metrics["skipped_steps"] == 0.0
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / CHECKPOINT_DIR).iterdir()} == checkpoints
    assert metrics_again["bpd/a"] == metrics["bpd/a"] and len(metrics_again[LIKELIHOODS]["fine"]) == 32


def test_train_transform_dequantizes_into_the_bins() -> None:
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = train_transform(torch.Generator().manual_seed(0), translate_pixels=0, flip=False)(images)
    low = images.float() / 256 - 0.5
    assert ((out >= low) & (out < low + 1 / 256)).all()


def test_demo_binary_is_real_column_major_format(tmp_path: Path) -> None:
    (tmp_path / "tiny-images").mkdir()
    path = write_demo_tiny_binary(tmp_path / "tiny-images" / "tiny_images.bin", 200, seed=0)
    assert path.stat().st_size == 200 * 3072
    records = np.fromfile(path, dtype=np.uint8).reshape(200, 3072)
    hwc = records[7].reshape(32, 32, 3, order="F")  # MATLAB layout: row index fastest
    images = load("tiny-images", "all", root=tmp_path, expected_count=None).images
    assert np.array_equal(images[7].permute(1, 2, 0).numpy(), hwc)


def test_tiny_split_keeps_whole_chunks() -> None:
    train, test = tiny_split_rows(10 * CHUNK_SIZE, seed=0)  # row i of the subset holds image i
    assert len(train) == 8 * CHUNK_SIZE and len(test) == 2 * CHUNK_SIZE
    chunks = lambda part: {int(v) // CHUNK_SIZE for v in part.flatten()}  # noqa: E731
    assert not chunks(train) & chunks(test)
    for chunk in chunks(test):
        assert sum(int(v) // CHUNK_SIZE == chunk for v in test.flatten()) == CHUNK_SIZE


def test_to_size_converts_channels_and_resolution() -> None:
    grey = torch.full((2, 1, 32, 32), 100, dtype=torch.uint8)
    rgb = to_size(grey, 16, 3)
    assert rgb.shape == (2, 3, 16, 16) and (rgb == 100).all()
    back = to_size(rgb, 16, 1)
    assert back.shape == (2, 1, 16, 16) and (back == 100).all()


def test_supervised_trainer_uses_true_class_nll_and_wrong_class_loss() -> None:
    glow = _model()
    base = copy.deepcopy(glow).requires_grad_(False)
    model = ClassConditionalGlow(glow, n_classes=3)
    with torch.no_grad():
        for parameter in model.mean:
            parameter.normal_(0, 0.5)
    images, outliers = torch.rand(6, 3, 8, 8) - 0.5, torch.rand(6, 3, 8, 8) - 0.5
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    config = OutlierLossConfig("class", weight=50.0, temperature=20.0)
    with torch.no_grad():
        class_lp = model.class_log_densities(images)
        expected_nll = nll_nats(class_lp[torch.arange(6), labels], 192).mean()
        expected_wrong = wrong_class_loss(class_lp, base(images)[1].sum(1), labels, 50.0, 20.0)
        expected_out = outlier_loss(model(outliers)[1][:, 0], base(outliers)[1].sum(1), 50.0, 20.0)
    trainer = create_trainer(model, torch.optim.Adamax(model.parameters(), lr=1e-3), base_model=base, outlier=config)
    trainer.run([((images, labels), (outliers, labels))], max_epochs=1)
    output = trainer.state.output
    assert output["wrong_class_loss"] == pytest.approx(expected_wrong.item(), rel=1e-5)
    assert output["loss"] == pytest.approx((expected_nll + expected_wrong + expected_out).item(), rel=1e-5)
