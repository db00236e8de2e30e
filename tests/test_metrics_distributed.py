"""OODMetrics across two gloo processes holding uneven numbers of samples equals the single-process result."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine

from common.metrics import OODMetrics, ood_metrics

# Samples per rank in each scenario: uneven, and one rank holding none at all.
RANK_SIZES = {"uneven": (37, 150), "rank_without_samples": (0, 64)}


def scenario_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All samples of a scenario, rank 0's first; many ties between ID and OOD."""
    rng = np.random.default_rng(len(name))
    n = sum(RANK_SIZES[name])
    is_ood = rng.random(n) < 0.3
    scores = np.round(rng.normal(size=n) + is_ood, 1).astype(np.float32).astype(np.float64)
    return scores, is_ood


def worker(local_rank: int, out_dir: str) -> None:
    """Evaluate this rank's share of each scenario; rank 0 writes the results as JSON."""
    rank = idist.get_rank()
    results = {}
    for name, sizes in RANK_SIZES.items():
        scores, is_ood = scenario_data(name)
        start = sum(sizes[:rank])
        mine = slice(start, start + sizes[rank])
        metric = OODMetrics()
        if sizes[rank] > 0:
            # Batches of 16 through an Engine, as an evaluator would feed them.
            engine = Engine(lambda _, batch: batch)
            metric.attach(engine, "ood")
            batches = zip(
                torch.from_numpy(scores[mine]).split(16), torch.from_numpy(is_ood[mine]).split(16), strict=True
            )
            data = list(batches)
            results[name] = engine.run(data).metrics["ood"]
        else:
            results[name] = metric.compute()  # must still join the gather
    if rank == 0:
        Path(out_dir, "results.json").write_text(json.dumps(results))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_ranks_with_uneven_samples_match_one_process(tmp_path: Path) -> None:
    with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=free_port()) as parallel:
        parallel.run(worker, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == set(RANK_SIZES)
    for name in RANK_SIZES:
        assert results[name] == ood_metrics(*scenario_data(name)), name
