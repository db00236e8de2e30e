"""OODMetrics and CollectTensors across two gloo processes holding uneven numbers of samples equal one process."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine

from common.metrics import CollectTensors, OODMetrics, ood_metrics

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
    collected = collect_uneven(rank)
    if rank == 0:
        Path(out_dir, "results.json").write_text(json.dumps(results))
        torch.save(collected, Path(out_dir, "collected.pt"))


def named_tensors(n: int) -> dict[str, torch.Tensor]:
    """Per-sample outputs of several dtypes and shapes, as an evaluator would collect (features, ids)."""
    generator = torch.Generator().manual_seed(n)
    return {"features": torch.randn(n, 3, 2, generator=generator), "ids": torch.arange(n) * 7}


def collect_uneven(rank: int) -> dict[str, torch.Tensor | None]:
    """CollectTensors over this rank's share (batches of 16) of named_tensors(sum of RANK_SIZES["uneven"])."""
    sizes = RANK_SIZES["uneven"]
    everything = named_tensors(sum(sizes))
    start = sum(sizes[:rank])
    mine = {name: value[start : start + sizes[rank]] for name, value in everything.items()}
    batches = [{name: value[i : i + 16] for name, value in mine.items()} | {"absent": None}
               for i in range(0, sizes[rank], 16)]  # fmt: skip
    engine = Engine(lambda _, batch: batch)
    CollectTensors().attach(engine, "collected")
    return engine.run(batches).metrics["collected"]


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
    collected = torch.load(tmp_path / "collected.pt", weights_only=True)
    expected = named_tensors(sum(RANK_SIZES["uneven"]))
    assert collected.keys() == {"features", "ids", "absent"} and collected["absent"] is None
    for name, value in expected.items():
        assert torch.equal(collected[name], value), name


def test_collect_tensors_in_one_process_concatenates_batches_in_order() -> None:
    collected = collect_uneven(0)  # one process: rank 0's share only
    expected = named_tensors(sum(RANK_SIZES["uneven"]))
    assert torch.equal(collected["features"], expected["features"][: RANK_SIZES["uneven"][0]])
    assert collected["ids"].dtype == torch.int64 and collected["absent"] is None
