"""MCHAD loss and training step beside pytorch-ood's ``MCHADLoss`` and ``WideResNet``, in the same process.

pytorch-ood needs torchvision, which the suite does not depend on, so this benchmark runs in an environment that has
both (README of ``mchad``); without pytorch-ood it prints a notice and returns no rows.

Matching normalisation: pytorch-ood 0.4.0 divides the center term by B_in·C and the NLL by B_in, the paper's code
by B·C and B, where B includes the outliers (reference mchad.md §1.3). With no outliers in the batch both agree. For
a mixed batch, our ``normalization="original"`` loss with λ_Λ and λ_Δ multiplied by B / B_in equals theirs.
The outlier term (a sum of relu(m² − D²)) is the same in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from bench.timing import BenchRow, ReferenceUnavailable, best_time
from mchad.losses import MCHADLoss
from mchad.models import ClassCenters, WideResNet

N_CLASSES, N_DIM, IN_BATCH, OUT_BATCH, SIDE = 10, 16, 128, 256, 32
WEIGHTS = {"weight_center": 1.0, "weight_nll": 1.5, "weight_oe": 5e-4}  # G-MCHAD on SVHN (§2.3)
MARGIN = 4.0
REFERENCE = "pytorch-ood 0.4.0"


def _labels(with_outliers: bool) -> torch.Tensor:
    labels = torch.arange(IN_BATCH) % N_CLASSES
    return torch.cat([labels, torch.full((OUT_BATCH,), -1)]) if with_outliers else labels


def _ours_loss(batch: int, known: int) -> MCHADLoss:
    scale = batch / known  # see the module docstring
    return MCHADLoss(
        WEIGHTS["weight_center"] * scale, WEIGHTS["weight_nll"] * scale, WEIGHTS["weight_oe"], margin=MARGIN,
        normalization="original",
    )  # fmt: skip


def loss_row(reference_loss: type, with_outliers: bool) -> BenchRow:
    """Loss value, forward and backward, on the embeddings of an ID-only or a mixed batch."""
    labels = _labels(with_outliers)
    z = torch.randn(len(labels), N_DIM, generator=torch.Generator().manual_seed(0)).requires_grad_()
    centers = ClassCenters(N_CLASSES, N_DIM)
    theirs = reference_loss(N_CLASSES, N_DIM, margin=MARGIN, **WEIGHTS)
    with torch.no_grad():
        theirs.centers.params.copy_(centers.centers)
    ours = _ours_loss(len(labels), IN_BATCH)

    def run_ours() -> float:
        loss = ours(centers(z), labels).total
        loss.backward()
        return loss.item()

    def run_theirs() -> float:
        loss = theirs(theirs.centers(z), labels)
        loss.backward()
        return loss.item()

    what = f"{IN_BATCH} ID + {OUT_BATCH} outliers" if with_outliers else f"{IN_BATCH} ID"
    return BenchRow(
        f"MCHAD loss fwd+bwd, {what}, D={N_DIM}, C={N_CLASSES}",
        best_time(run_ours, repeat=50),
        f"{REFERENCE} MCHADLoss",
        best_time(run_theirs, repeat=50),
        abs(run_ours() - run_theirs()),
        "weights ×B/B_in for 0.4.0's ÷B_in" if with_outliers else "",
    )


def interleaved_best_times(
    first: Callable[[], object], second: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Best wall times of ``first`` and ``second`` called alternately, so slow phases of a shared machine hit both."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for function, kept in zip((first, second), times, strict=True):
            start = time.perf_counter()
            function()
            kept.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def step_row(reference_loss: type, reference_model: type) -> BenchRow:
    """One G-MCHAD training step of WRN-40-2 (forward, loss, backward, Adam) on 128 + 256 images 32×32."""
    torch.manual_seed(0)
    ours_net = WideResNet(N_DIM, dropout=0.0)
    theirs_net = reference_model(num_classes=N_DIM, drop_rate=0.0)
    theirs_net.load_state_dict(ours_net.state_dict())
    centers = ClassCenters(N_CLASSES, N_DIM)
    theirs_loss = reference_loss(N_CLASSES, N_DIM, margin=MARGIN, **WEIGHTS)
    with torch.no_grad():
        theirs_loss.centers.params.copy_(centers.centers)
    labels = _labels(True)
    images = torch.randn(len(labels), 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    ours_loss = _ours_loss(len(labels), IN_BATCH)
    ours_optimizer = torch.optim.Adam([*ours_net.parameters(), *centers.parameters()], lr=0.0)  # lr 0: same
    theirs_optimizer = torch.optim.Adam([*theirs_net.parameters(), *theirs_loss.parameters()], lr=0.0)  # weights

    def ours_step() -> float:
        ours_optimizer.zero_grad()
        loss = ours_loss(centers(ours_net(images)), labels).total
        loss.backward()
        ours_optimizer.step()
        return loss.item()

    def theirs_step() -> float:
        theirs_optimizer.zero_grad()
        loss = theirs_loss(theirs_loss.centers(theirs_net(images)), labels)
        loss.backward()
        theirs_optimizer.step()
        return loss.item()

    difference = abs(ours_step() - theirs_step())  # also the warm-up
    ours_s, theirs_s = interleaved_best_times(ours_step, theirs_step, repeat=3)
    return BenchRow(
        f"G-MCHAD train step WRN-40-2, {IN_BATCH}+{OUT_BATCH} images {SIDE}×{SIDE}, Adam",
        ours_s,
        f"{REFERENCE} WideResNet + MCHADLoss",
        theirs_s,
        difference,
        f"CPU, {torch.get_num_threads()} thread(s), dropout 0 (same weights)",
    )


def run() -> list[BenchRow]:
    try:
        from pytorch_ood.loss import MCHADLoss as ReferenceLoss
        from pytorch_ood.model import WideResNet as ReferenceModel
    except ImportError as error:
        raise ReferenceUnavailable(
            f"pytorch-ood is not importable ({error}); see mchad/README.md, Benchmark"
        ) from error
    return [loss_row(ReferenceLoss, False), loss_row(ReferenceLoss, True), step_row(ReferenceLoss, ReferenceModel)]
