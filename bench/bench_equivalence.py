"""The same trained weights scored by the original code and by ours (``python -m bench equivalence``).

For each paper the original code builds its own model, gives it trained-like weights by its own forward and
backward passes, and saves it in the format it writes; our ``<paper>.original_checkpoints.load_original`` loads
that file, and both score the same images. Reported per paper: the largest per-image difference of the score,
each side's AUROC of in-distribution against OOD images, and each side's scoring time per 10,000 images on this
CPU. The images are synthetic 3×32×32 uint8 smooth colour fields (seeded, :func:`image_families`):
in-distribution, ten classes; OOD, ten other classes of the same kind.

- InvGlow (``INVGLOW_ORIGINAL``: a checkout or bare git snapshot of boschresearch/hierarchical_anomaly_detection,
  imported as :mod:`bench.bench_invglow` does, never copied): the original's ``create_glow_model`` (L = 3, K = 4,
  64 channels; affine, LU), its ActNorm data initialisation (``init_all_modules``), every parameter perturbed by
  seeded noise (the zero-initialised output convolutions become non-zero), then Adamax steps on dequantised images;
  ``torch.save(model, path)`` as its ``main.py`` does. Score: bits/dim of the bin-centred image, the original as
  its ``evaluate.get_nlls_only_final`` (ToTensor, ``preprocess``, + 1/512; ``log2(256) − lp / (D·ln 2)``), ours
  through :func:`invglow.engine.eval_transform` and :func:`invglow.losses.bits_per_dim`. Bound 1e-3 bits/dim.
- MemAE (``MEMAE_REFERENCE``, as :mod:`bench.bench_memae`): the official ``AutoEncoderCov3DMem`` layout in 2-D on
  our CIFAR-10 net (``encoder`` / ``decoder`` ``nn.Sequential`` of conv, BatchNorm, LeakyReLU(0.2), the official
  ``MemModule`` as ``mem_rep``; N = 500, λ = 0.002, the paper setting), Adam steps on MSE + 2e-4 · the official
  ``EntropyLossEncap``, ``torch.save(model.state_dict())`` as its ``script_training.py``. Score: per-image mean
  squared reconstruction error (ours :func:`memae.scores.anomaly_scores`; the official's as its test script scores
  the AE, ``mean(r²)``). Inputs normalised to [−1, 1] (its ``Normalize(0.5, 0.5)``). Bound 1e-5.
- MCHAD (``PYTORCH_OOD_PYTHON``: the interpreter of an environment with pytorch-ood, mchad/README.md, Benchmark;
  the current one if it has pytorch-ood): pytorch-ood's ``WideResNet`` (WRN-40-2, D = 16) and ``MCHADLoss`` (10
  centers, SVHN weights), Adam steps through them, saved as ``{**model.state_dict(), **loss.state_dict()}``, run
  by :mod:`bench.pytorch_ood_side` in that interpreter. Score: the squared distances to the centers (all B × C
  compared), AUROC by the distance to the nearest center (:func:`mchad.scores.min_distance`). Bound 1e-5. The
  row's note says where the two sides part, if they do: the centers, the embeddings, and the exact (float64)
  distances of the two sides' embeddings (a different float32 summation order, as a mean over H×W in place of
  ``avg_pool2d(out, 8)`` once was, moves distances near 80 by ~2e-5).

``EQUIVALENCE_IMAGES`` sets the images per family (default 512). The InvGlow row is at K = 4, 64 channels: the
paper's K = 32, 512 channels takes minutes on this CPU, and the perturbation above, sized for 64 channels, made all
its likelihoods non-finite when tried (the paper-size mapping is tested in ``tests/test_original_checkpoints.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.bench_invglow import ORIGINAL, original_package, original_source
from bench.bench_memae import _reference_module as memae_reference_module
from bench.timing import ReferenceUnavailable, best_times_interleaved
from common.metrics import ood_metrics
from common.transforms import normalize, to_float
from invglow.config import GlowConfig, InvGlowConfig
from invglow.engine import eval_transform
from invglow.losses import bits_per_dim
from invglow.original_checkpoints import load_original as load_invglow
from mchad.config import CONFIGS as MCHAD_CONFIGS
from mchad.original_checkpoints import load_original as load_mchad
from mchad.scores import min_distance
from memae.config import CONFIGS as MEMAE_CONFIGS
from memae.data import normalisation
from memae.models import ARCHITECTURES
from memae.original_checkpoints import load_original as load_memae
from memae.scores import anomaly_scores

REPOSITORY = Path(__file__).resolve().parents[1]
N_IMAGES = int(os.environ.get("EQUIVALENCE_IMAGES", "512"))  # per family
INVGLOW_K, INVGLOW_HIDDEN = 4, 64
PYTORCH_OOD_ENV = "PYTORCH_OOD_PYTHON"
PERTURBATION = 0.02  # std of the seeded noise added to every parameter of the original InvGlow
SCORE_BATCH = 128
TIMED_ROUNDS = 2  # scoring passes timed per side, after the pass that gives the scores


@dataclass(frozen=True)
class EquivalenceRow:
    """One paper: the original's and our scores of the same images from the same saved weights."""

    paper: str
    original: str
    model: str
    score: str
    n_images: int
    max_abs_diff: float
    bound: float
    auroc_original: float
    auroc_ours: float
    ours_s: float  # scoring time of all n_images
    original_s: float
    note: str = ""

    def cells(self) -> list[str]:
        per_10k = 10_000 / self.n_images
        within = "" if self.max_abs_diff <= self.bound else " **exceeds**"
        return [
            self.paper, self.original, self.model, self.score, str(self.n_images),
            f"{self.max_abs_diff:.1e}{within}", f"{self.bound:.0e}", f"{self.auroc_original:.4f}",
            f"{self.auroc_ours:.4f}", f"{self.ours_s * per_10k:.1f}", f"{self.original_s * per_10k:.1f}", self.note,
        ]  # fmt: skip


HEADER = [
    "paper", "original code", "model", "score", "images (ID+OOD)", "max abs diff", "bound", "AUROC original",
    "AUROC ours", "ours s / 10k images", "original s / 10k images", "note",
]  # fmt: skip


def image_families(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` in-distribution images, their class labels (0..9) and ``n`` OOD images, all (n, 3, 32, 32) uint8.

    Every image is a smooth colour field: a 4×4×3 class template (fixed, uniform in [40, 215]) jittered by N(0, 20²),
    upsampled bilinearly, plus N(0, 4²) pixel noise. The in-distribution images come from templates 0..9, the OOD
    images from ten other templates of the same kind (novel classes), so that the AUROC is not trivially 1.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = 40 + 175 * torch.rand(20, 3, 4, 4, generator=torch.Generator().manual_seed(1234))

    def fields(classes: torch.Tensor) -> torch.Tensor:
        coarse = templates[classes] + 20 * torch.randn(len(classes), 3, 4, 4, generator=generator)
        fine = F.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
        fine = fine + 4 * torch.randn(len(classes), 3, 32, 32, generator=generator)
        return fine.round().clamp(0, 255).to(torch.uint8)

    labels = torch.arange(n) % 10
    return fields(labels), labels, fields(10 + labels)


def auroc(scores: np.ndarray | torch.Tensor, n_in_distribution: int) -> float:
    """AUROC of scores (higher = more anomalous) whose first ``n_in_distribution`` rows are in-distribution."""
    scores = np.asarray(scores, dtype=np.float64)
    return ood_metrics(scores, np.arange(len(scores)) >= n_in_distribution, keys=("AUROC",))["AUROC"]


def _batched(function: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([function(batch) for batch in images.split(SCORE_BATCH)])


def _timed(ours: Callable[[], object], original: Callable[[], object]) -> tuple[float, float]:
    """Best times of both scoring passes, alternated so that load changes hit both alike."""
    ours_s, original_s = best_times_interleaved([ours, original], repeat=TIMED_ROUNDS, warmup=0)
    return ours_s, original_s


# --- InvGlow ---------------------------------------------------------------------------------------------------


def _dequantized(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The original's training input: ``u/256 − 0.5`` plus uniform noise of one bin."""
    return (images.float() + torch.rand(images.shape, generator=generator)) / 256 - 0.5


def original_eval_input(images: torch.Tensor) -> torch.Tensor:
    """The original's evaluation input: ToTensor (``u/255``), ``preprocess`` (``x·255 / 256 − 0.5``) and the half
    bin its ``_evaluate_without_noise`` adds (``+ noise_factor / 2``, noise_factor 1/256)."""
    return (images.float() / 255) * 255 / 256 - 0.5 + (1 / 256.0) / 2


def trained_original_glow(
    original_glow: ModuleType, original_init: ModuleType, train: torch.Tensor, k: int, hidden: int, steps: int
) -> nn.Module:
    """The original's Glow, ActNorms initialised on ``train``, parameters perturbed, ``steps`` Adamax steps."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    # Its ActNorm init prints a line per layer; its InvPermute calls torch.qr and torch.lu, deprecated (warnings).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = original_glow.create_glow_model(
            hidden_channels=hidden, K=k, L=3, flow_permutation="invconv", flow_coupling="affine",
            LU_decomposed=True, n_chans=3,
        )  # fmt: skip
        original_init.init_all_modules(model, _dequantized(train[:64], generator))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(PERTURBATION * torch.randn(parameter.shape, generator=generator))
    optimizer = torch.optim.Adamax(model.parameters(), lr=5e-4, weight_decay=5e-5)  # its main.py's
    for step in range(steps):
        batch = train[torch.arange(step * 64, (step + 1) * 64) % len(train)]
        optimizer.zero_grad()
        (-model(_dequantized(batch, generator), fixed={"y": None})[1].mean()).backward()
        optimizer.step()
    return model.eval()


def original_bits_per_dim(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Bits/dim as the original's ``get_nlls_only_final``: ``log2(256) − (lp / ln 2) / D`` in numpy."""
    lprob = _batched(lambda x: model(original_eval_input(x), fixed={"y": None})[1], images).numpy()
    return np.log2(256) - ((lprob / np.log(2)) / np.prod(images.shape[1:]))


def our_bits_per_dim(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Bits/dim of our model on the bin centres of ``images`` (the evaluation path of :mod:`invglow.engine`)."""
    transform = eval_transform()
    return bits_per_dim(_batched(lambda x: model(transform(x))[1].sum(1), images), model.n_dims)


def invglow_row(k: int, hidden: int, n_images: int, train_steps: int) -> EquivalenceRow:
    with tempfile.TemporaryDirectory() as folder:
        source = original_source(Path(folder))
        if source is None:
            raise ReferenceUnavailable(
                f"the original code is not at INVGLOW_ORIGINAL={ORIGINAL}: set it to a checkout or bare git snapshot "
                "of boschresearch/hierarchical_anomaly_detection"
            )
        train = image_families(1024, seed=1)[0]
        path = Path(folder) / "tiny_model.th"
        with original_package(source) as (original_glow, original_init):
            model = trained_original_glow(original_glow, original_init, train, k, hidden, train_steps)
            torch.save(model, path)  # as its main.py: th.save(model, saved_base_model_path)
        config = InvGlowConfig(glow=GlowConfig(steps=k, hidden=hidden))
        ours = load_invglow(path, config).eval()
    in_distribution, _, ood = image_families(n_images, seed=2)
    images = torch.cat([in_distribution, ood])
    theirs_bpd, ours_bpd = original_bits_per_dim(model, images), our_bits_per_dim(ours, images).double().numpy()
    ours_s, original_s = _timed(lambda: our_bits_per_dim(ours, images), lambda: original_bits_per_dim(model, images))
    n_parameters = sum(parameter.numel() for parameter in ours.parameters())
    return EquivalenceRow(
        "InvGlow", "boschresearch/hierarchical_anomaly_detection", f"Glow L=3, K={k}, {hidden} ch., 3×32×32",
        "bits/dim", len(images), float(np.abs(theirs_bpd - ours_bpd).max()), 1e-3,
        auroc(theirs_bpd, n_images), auroc(ours_bpd, n_images), ours_s, original_s,
        f"{n_parameters:,} parameters; bits/dim {theirs_bpd.min():.2f} to {theirs_bpd.max():.2f}",
    )  # fmt: skip


# --- MemAE -----------------------------------------------------------------------------------------------------


class OfficialImageMemAE(nn.Module):
    """The official ``AutoEncoderCov3DMem`` in 2-D on one of our image nets: ``encoder`` (conv, BatchNorm,
    LeakyReLU(0.2) per layer), the official ``MemModule`` as ``mem_rep``, ``decoder`` (transposed conv, BatchNorm,
    LeakyReLU per layer, the last a lone transposed conv); its forward."""

    def __init__(self, architecture: str, num_slots: int, shrink: float, memory_module: ModuleType) -> None:
        super().__init__()
        spec = ARCHITECTURES[architecture]
        encoder: list[nn.Module] = []
        for c_in, c_out, kernel, stride, padding in spec.encoder:
            encoder += [nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.BatchNorm2d(c_out)]
            encoder.append(nn.LeakyReLU(0.2, inplace=True))
        decoder: list[nn.Module] = []
        for c_in, c_out, kernel, stride, padding, output_padding in spec.decoder:
            decoder += [nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding)]
            decoder += [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
        self.encoder = nn.Sequential(*encoder)
        self.mem_rep = memory_module.MemModule(
            mem_dim=num_slots, fea_dim=spec.latent_channels, shrink_thres=shrink, device="cpu"
        )
        self.decoder = nn.Sequential(*decoder[:-2])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        res_mem = self.mem_rep(self.encoder(x))
        return {"output": self.decoder(res_mem["output"]), "att": res_mem["att"]}


def official_normalised(images: torch.Tensor) -> torch.Tensor:
    """The official test transform: ToTensor, then Normalize(0.5, 0.5) per channel."""
    return (images.float() / 255 - 0.5) / 0.5


def memae_row(n_images: int, train_steps: int = 40) -> EquivalenceRow:
    memory_module = memae_reference_module("memory_module")  # ReferenceUnavailable without MEMAE_REFERENCE
    entropy = memae_reference_module("entropy_loss").EntropyLossEncap()
    setting = MEMAE_CONFIGS["paper"].image_table[1]  # CIFAR-10: the cifar net, N = 500, λ = 0.002
    torch.manual_seed(0)
    official = OfficialImageMemAE(
        setting.data.architecture, setting.memory.num_slots, setting.memory.shrink_threshold, memory_module
    )
    train = official_normalised(image_families(1024, seed=1)[0])
    optimizer = torch.optim.Adam(official.parameters(), lr=1e-3)
    for step in range(train_steps):
        batch = train[torch.arange(step * 64, (step + 1) * 64) % len(train)]
        optimizer.zero_grad()
        out = official(batch)
        (F.mse_loss(out["output"], batch) + 2e-4 * entropy(out["att"])).backward()  # its script_training.py loss
        optimizer.step()
    official.eval()
    in_distribution, _, ood = image_families(n_images, seed=2)
    images = torch.cat([in_distribution, ood])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "MemAE_epoch_0040_final.pt"
        torch.save(official.state_dict(), path)  # as its script_training.py
        ours = load_memae(path, setting).eval()
    ours_input, official_input = normalisation(3)(images.clone()), official_normalised(images)

    def official_scores() -> torch.Tensor:  # its test script's AE score, np.mean(r ** 2), per image
        return _batched(lambda x: (official(x)["output"] - x).pow(2).flatten(1).mean(1), official_input)

    def our_scores() -> torch.Tensor:
        return _batched(lambda x: anomaly_scores(ours, x)[0], ours_input)

    theirs, mine = official_scores(), our_scores()
    ours_s, original_s = _timed(our_scores, official_scores)
    with torch.no_grad():
        addressed = (official(official_input[:SCORE_BATCH])["att"] > 0).sum(1).float().mean().item()
    return EquivalenceRow(
        "MemAE", "donggong1/memae-anomaly-detection", f"CIFAR-10 net, N={setting.memory.num_slots}, "
        f"λ={setting.memory.shrink_threshold}, dot addressing", "reconstruction MSE", len(images),
        float((theirs - mine).abs().max()), 1e-5, auroc(theirs, n_images), auroc(mine, n_images), ours_s, original_s,
        f"MSE {theirs.min():.3f} to {theirs.max():.3f}; {addressed:.0f} of {setting.memory.num_slots} slots "
        "addressed per query after shrinkage (mean)",
    )  # fmt: skip


# --- MCHAD -----------------------------------------------------------------------------------------------------


def pytorch_ood_python() -> str:
    """The interpreter that runs :mod:`bench.pytorch_ood_side`."""
    if os.environ.get(PYTORCH_OOD_ENV):
        return os.environ[PYTORCH_OOD_ENV]
    if importlib.util.find_spec("pytorch_ood") is not None:
        return sys.executable
    raise ReferenceUnavailable(
        f"pytorch-ood is not importable here: set {PYTORCH_OOD_ENV} to the python of an environment that has it "
        "(mchad/README.md, Benchmark)"
    )


def mchad_row(n_images: int, train_steps: int = 30) -> EquivalenceRow:
    python = pytorch_ood_python()
    config = MCHAD_CONFIGS["paper"]
    dataset = next(d for d in config.datasets if d.name == "SVHN")
    method = next(m for m in config.methods["SVHN"] if m.name == "MCHAD")

    def normalised(images: torch.Tensor) -> torch.Tensor:
        return normalize(to_float(images), dataset.mean, dataset.std)

    train_images, train_labels, _ = image_families(1024, seed=1)
    in_distribution, _, ood = image_families(n_images, seed=2)
    images = normalised(torch.cat([in_distribution, ood]))
    settings = {
        "train_images": normalised(train_images), "train_labels": train_labels, "images": images,
        "n_classes": dataset.n_classes, "n_dim": method.n_dim, "depth": config.train.depth,
        "widen_factor": config.train.widen_factor, "dropout": config.train.dropout, "margin": method.margin,
        "weights": (method.weight_center, method.weight_nll, method.weight_outlier), "lr": config.train.lr,
        "steps": train_steps, "batch": 32, "seed": 0, "score_batch": SCORE_BATCH,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        torch.save(settings, Path(folder) / "input.pt")
        command = [python, "-m", "bench.pytorch_ood_side", str(Path(folder) / "input.pt"), folder]
        done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        reference = torch.load(Path(folder) / "reference.pt")
        ours = load_mchad(Path(folder) / "model_and_loss.pt", config.train, dataset, method).eval()
        saved_centers = torch.load(Path(folder) / "model_and_loss.pt")["center_loss._centers._params"]

    def our_distances() -> torch.Tensor:
        return _batched(lambda x: ours(x).distances, images)

    mine = our_distances()
    ours_s = min(best_times_interleaved([our_distances], repeat=TIMED_ROUNDS, warmup=0))
    theirs = reference["distances"]
    return EquivalenceRow(
        "MCHAD", "pytorch-ood 0.4.0", f"WRN-{config.train.depth}-{config.train.widen_factor}, D={method.n_dim}, "
        f"{dataset.n_classes} centers", "squared distances to centers", len(images),
        float((theirs - mine).abs().max()), 1e-5, auroc(min_distance(theirs), n_images),
        auroc(min_distance(mine), n_images), ours_s, reference["seconds"],
        _mchad_note(ours, images, reference, saved_centers),
    )  # fmt: skip


def _mchad_note(ours: nn.Module, images: torch.Tensor, reference: dict, saved_centers: torch.Tensor) -> str:
    """Where the two sides' distances part: the centers, the embeddings, and the exact (float64) distances of the
    two sides' embeddings to the same centers."""
    embeddings = _batched(lambda x: ours(x).embedding, images)
    exact = [
        ((z.double()[:, None] - saved_centers.double()).pow(2)).sum(-1) for z in (embeddings, reference["embeddings"])
    ]
    largest = float(reference["distances"].max())
    spacing = float(np.spacing(np.float32(largest)))  # of float32 numbers near the largest distance
    centers = "bit-identical" if torch.equal(ours.centers.centers, saved_centers) else "DIFFERENT"
    embedding_diff = float((reference["embeddings"] - embeddings).abs().max())
    return (
        f"centers {centers}; embeddings differ by up to {embedding_diff:.1e}; "
        f"float64 distances of the two embeddings differ by up to {float((exact[0] - exact[1]).abs().max()):.1e}; "
        f"distances up to {largest:.0f}, float32 spacing there {spacing:.1e}; reference: {reference['versions']}, "
        "timed in its own process"
    )


# --- report ----------------------------------------------------------------------------------------------------


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"


def report() -> str:
    """The markdown table of every paper whose original is available, and a line per skipped paper."""
    load_before = _load()
    makers: list[tuple[str, Callable[[], EquivalenceRow]]] = [
        ("invglow", lambda: invglow_row(INVGLOW_K, INVGLOW_HIDDEN, N_IMAGES, train_steps=20)),
        ("memae", lambda: memae_row(N_IMAGES)),
        ("mchad", lambda: mchad_row(N_IMAGES)),
    ]
    rows, skipped = [], []
    for name, make in makers:
        try:
            rows.append(make())
        except ReferenceUnavailable as reason:
            skipped.append(f"- {name}: skipped, {reason}")
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * 4 + "---:|" * (len(HEADER) - 5) + "---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    threads = torch.get_num_threads()
    lines.append(
        f"\nCPU, {threads} thread{'s' * (threads > 1)}; scoring batch {SCORE_BATCH}, best of {TIMED_ROUNDS} passes; "
        f"1-minute load average {load_before} before, {_load()} after (/proc/loadavg, {os.cpu_count()} cores)."
    )
    return "\n".join(lines + skipped)
