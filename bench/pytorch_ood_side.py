"""The pytorch-ood side of the MCHAD row of :mod:`bench.bench_equivalence`, run in an environment with pytorch-ood.

``python -m bench.pytorch_ood_side INPUT FOLDER`` (from the repository's root). pytorch-ood needs torchvision, which
the suite does not depend on, so this runs under another interpreter (``mchad/README.md``, Benchmark); it imports
only torch and pytorch-ood, nothing of the suite.

INPUT is a ``torch.save`` of a dict: ``train_images`` (N, C, H, W) float and ``train_labels`` (N,) for the
training steps, ``images`` (M, C, H, W) float to score, and the settings ``n_classes``, ``n_dim``, ``depth``,
``widen_factor``, ``dropout``, ``margin``, ``weights`` (``MCHADLoss``'s weight_center, weight_nll, weight_oe),
``lr``, ``steps``, ``batch``, ``seed``, ``score_batch``. pytorch-ood's ``WideResNet`` and ``MCHADLoss`` are
built, trained ``steps`` Adam steps on the training images (weights, BatchNorm statistics and centers move as in
training), and then, in eval mode, give every image's squared distances to the centers, ``loss.distance(model(x))``
(M, C), timed.

Written to FOLDER: ``model_and_loss.pt``, ``{**model.state_dict(), **loss.state_dict()}`` as a pytorch-ood user
saves both, and ``reference.pt``, ``{"distances", "embeddings", "seconds", "versions"}`` (seconds: the best of two
scoring passes; embeddings: ``model(x)``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytorch_ood
import torch
from pytorch_ood.loss import MCHADLoss
from pytorch_ood.model import WideResNet


def main(input_path: str, folder: str) -> None:
    settings = torch.load(input_path)
    torch.manual_seed(settings["seed"])
    model = WideResNet(
        num_classes=settings["n_dim"], depth=settings["depth"], widen_factor=settings["widen_factor"],
        drop_rate=settings["dropout"], in_channels=settings["train_images"].shape[1],
    )  # fmt: skip
    weight_center, weight_nll, weight_oe = settings["weights"]
    loss = MCHADLoss(
        settings["n_classes"], settings["n_dim"], margin=settings["margin"], weight_center=weight_center,
        weight_nll=weight_nll, weight_oe=weight_oe,
    )  # fmt: skip
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=settings["lr"])
    images, labels, batch = settings["train_images"], settings["train_labels"], settings["batch"]
    model.train()
    for step in range(settings["steps"]):
        rows = torch.arange(step * batch, (step + 1) * batch) % len(images)
        optimizer.zero_grad()
        loss(loss.distance(model(images[rows])), labels[rows]).backward()
        optimizer.step()
    model.eval()
    torch.save({**model.state_dict(), **loss.state_dict()}, Path(folder) / "model_and_loss.pt")

    @torch.no_grad()
    def distances() -> torch.Tensor:
        return torch.cat([loss.distance(model(x)) for x in settings["images"].split(settings["score_batch"])])

    times = []
    for _ in range(2):
        start = time.perf_counter()
        result = distances()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        embeddings = torch.cat([model(x) for x in settings["images"].split(settings["score_batch"])])
    versions = f"pytorch-ood {pytorch_ood.__version__}, torch {torch.__version__}"
    output = {"distances": result, "embeddings": embeddings, "seconds": min(times), "versions": versions}
    torch.save(output, Path(folder) / "reference.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
