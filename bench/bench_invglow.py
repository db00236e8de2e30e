"""InvGlow: one Glow training step and evaluation at the paper's size, and create_tiny's throughput.

- Training step, paper configuration (L = 3, K = 32, 512 hidden, affine, LU; batch 64 of 3×32×32; Adamax), ours
  against the original ``boschresearch/hierarchical_anomaly_detection`` model built by its ``create_glow_model``
  in the same process. The original is read from the snapshot ``fetch`` puts under ``/work/.mirror`` (or the
  folder in ``INVGLOW_ORIGINAL``); it is imported for the benchmark only, never copied into the suite. Both
  packages are called ``invglow``, so the original is imported with our modules moved out of ``sys.modules``.
- Evaluation: images per second of our no-grad forward at batch 64.
- create_tiny: MB/s written by ``common.tiny_builder.build_tiny_subset`` over a generated binary (half, then all
  of its chunks kept) against one sequential read of the same file, both starting with the binary evicted from the
  page cache (as in a real 227 GB run), and the process's peak RSS growth for two binary sizes.

``python -m bench invglow``; ``INVGLOW_BENCH_MB`` sets the larger binary's size (default 1024),
``INVGLOW_BENCH_STEPS`` the Glow's K (default 32, the paper's), ``INVGLOW_BENCH_REPEAT`` the timed rounds (2).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from bench.timing import BenchRow, best_time, best_times_interleaved
from common.tiny_builder import build_tiny_subset
from invglow.models import Glow, initialize_actnorms

# A checkout or bare git snapshot of boschresearch/hierarchical_anomaly_detection (imported, never copied).
ORIGINAL = Path(os.environ.get("INVGLOW_ORIGINAL", "")) if os.environ.get("INVGLOW_ORIGINAL") else None
BATCH = 64
SHAPE = (3, 32, 32)
REPEAT = int(os.environ.get("INVGLOW_BENCH_REPEAT", "2"))  # a paper-size CPU step takes 10-20 s on 2 cores
STEPS = int(os.environ.get("INVGLOW_BENCH_STEPS", "32"))  # K per scale
_STEP_NAME = f"invglow train step, paper config{'' if STEPS == 32 else f' but K={STEPS}'}"


def original_source(folder: Path) -> Path | None:
    """A folder holding the original ``invglow`` package: ``ORIGINAL`` itself, or its files extracted into
    ``folder`` when ``ORIGINAL`` is a bare git snapshot; None when neither exists."""
    if ORIGINAL is None:
        return None
    if (ORIGINAL / "invglow" / "models" / "glow.py").is_file():
        return ORIGINAL
    if not (ORIGINAL / "HEAD").is_file():
        return None
    archive = subprocess.run(
        ["git", f"--git-dir={ORIGINAL}", "archive", "HEAD", "invglow"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


@contextlib.contextmanager
def original_package(source: Path) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Import the original ``invglow.models.glow`` with our ``invglow`` modules set aside, then restore ours."""
    ours = {name: module for name, module in sys.modules.items() if name == "invglow" or name.startswith("invglow.")}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(source))
    try:
        import invglow.invertible.init as original_init  # the original's, from ORIGINAL
        import invglow.models.glow as original_glow

        yield original_glow, original_init
    finally:
        sys.path.remove(str(source))
        for name in [n for n in sys.modules if n == "invglow" or n.startswith("invglow.")]:
            del sys.modules[name]
        sys.modules.update(ours)


def step_function(
    model: torch.nn.Module, log_density: Callable[[torch.Tensor], torch.Tensor], device: str = "cpu"
) -> Callable[[], None]:
    """One Adamax training step of ``model`` (moved to ``device``) on a fixed random batch, as a function."""
    model.to(device)
    optimizer = torch.optim.Adamax(model.parameters(), lr=5e-4, weight_decay=5e-5)
    images = (torch.rand(BATCH, *SHAPE) - 0.5).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        (-log_density(images).mean()).backward()
        optimizer.step()
        if images.is_cuda:
            torch.cuda.synchronize()

    return step


def our_model(checkpoint_segment: int | None = None) -> Glow:
    """Our Glow of the paper configuration (K = ``STEPS``), seeded, its ActNorms initialised on a random batch."""
    torch.manual_seed(0)
    model = Glow(SHAPE, n_scales=3, steps=STEPS, hidden=512, checkpoint_segment=checkpoint_segment)
    initialize_actnorms(model, torch.rand(BATCH, *SHAPE) - 0.5)
    return model


def our_step(model: Glow, device: str = "cpu") -> Callable[[], None]:
    """:func:`step_function` of our ``model``."""
    return step_function(model, lambda x: model(x)[1].sum(1), device)


def original_model(original_glow: ModuleType, original_init: ModuleType) -> torch.nn.Module:
    """The original's ``create_glow_model`` at the paper configuration, its ActNorms initialised on a random batch
    (the line it prints per layer silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        model = original_glow.create_glow_model(
            hidden_channels=512, K=STEPS, L=3, flow_permutation="invconv", flow_coupling="affine",
            LU_decomposed=True, n_chans=3,
        )  # fmt: skip
        original_init.init_all_modules(model, torch.rand(BATCH, *SHAPE) - 0.5)
    return model


def original_step(model: torch.nn.Module, device: str = "cpu") -> Callable[[], None]:
    """:func:`step_function` of the original's ``model``."""
    return step_function(model, lambda x: model(x, fixed={"y": None})[1], device)


def _glow_rows() -> list[BenchRow]:
    ours = our_model()
    ours_step = our_step(ours)
    with torch.no_grad():
        our_eval = best_time(lambda: ours(torch.rand(BATCH, *SHAPE) - 0.5), repeat=REPEAT)
    rows = [BenchRow("invglow eval forward, batch 64 (s per batch)", our_eval, "—", our_eval, note="no reference")]
    with tempfile.TemporaryDirectory() as folder:
        source = original_source(Path(folder))
        if source is None:
            note = f"original code not found ({ORIGINAL}): set INVGLOW_ORIGINAL to its checkout"
            our_time = best_time(ours_step, repeat=REPEAT)
            return [BenchRow(_STEP_NAME, our_time, "original", float("nan"), note=note), *rows]
        with original_package(source) as (original_glow, original_init):
            model = original_model(original_glow, original_init)
            our_time, reference = best_times_interleaved([ours_step, original_step(model)], repeat=REPEAT)
    n_ours, n_original = (sum(p.numel() for p in m.parameters()) for m in (ours, model))
    note = f"batch 64, 3×32×32, Adamax, steps interleaved; parameters ours {n_ours:,} vs original {n_original:,}"
    return [
        BenchRow(_STEP_NAME, our_time, "original create_glow_model", reference, note=note),
        *rows,
    ]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _evict_from_page_cache(path: Path) -> None:
    """Write ``path`` back and drop its cached pages, so that the next read comes from the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def _generated_binary(path: Path, megabytes: int) -> int:
    """Write a random binary of about ``megabytes`` MB in the Tiny Images format; its number of images."""
    n_images = megabytes * 2**20 // 3072 // 64 * 64
    block = np.random.default_rng(0).integers(0, 256, (4096, 3072), dtype=np.uint8).tobytes()
    with open(path, "wb") as handle:
        for start in range(0, n_images, 4096):
            handle.write(block[: min(4096, n_images - start) * 3072])
    return n_images


def _raw_read_seconds(path: Path) -> float:
    """Time of one sequential read of ``path`` from the disk, in 64 MB requests."""
    _evict_from_page_cache(path)
    start = time.perf_counter()
    with open(path, "rb") as handle:
        while handle.read(64 * 2**20):
            pass
    return time.perf_counter() - start


def _tiny_rows() -> list[BenchRow]:
    rows = []
    large = int(os.environ.get("INVGLOW_BENCH_MB", "1024"))
    for megabytes, kept_fraction in ((256, 0.5), (large, 0.5), (large, 1.0)):
        with tempfile.TemporaryDirectory() as folder:
            binary = Path(folder) / "tiny_images.bin"
            n_images = _generated_binary(binary, megabytes)
            raw_seconds = _raw_read_seconds(binary)
            _evict_from_page_cache(binary)
            before = _peak_rss_mb()
            n_chunks = int((n_images // 64 - 1) * kept_fraction)
            start = time.perf_counter()
            build_tiny_subset(binary, Path(folder), n_chunks=n_chunks, expected_images=None, progress=False)
            build_seconds = time.perf_counter() - start
            kept_mb = n_chunks * 64 * 3072 / 2**20
            note = (
                f"{n_chunks:,} chunks kept: {kept_mb / build_seconds:.0f} MB/s written vs raw read "
                f"{megabytes / raw_seconds:.0f} MB/s; peak RSS growth {_peak_rss_mb() - before:.0f} MB"
            )
            rows.append(
                BenchRow(f"create_tiny, {megabytes} MB, {kept_fraction:.0%} kept (s per GB kept)",
                         build_seconds / kept_mb * 1024, "raw sequential read (s per GB)",
                         raw_seconds / megabytes * 1024, note=note)
            )  # fmt: skip
    return rows


def run() -> list[BenchRow]:
    """All InvGlow benchmark rows."""
    return [*_tiny_rows(), *_glow_rows()]
