"""TensorBatchLoader and PairedLoader: coverage, order, sharding, alignment, memory maps and Ignite runs."""

from __future__ import annotations

from pathlib import Path

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from common.loaders import PairedLoader, TensorBatchLoader, evaluation_loaders, rank_block
from common.run import make_reproducible
from common.transforms import to_float


def indexed_set(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 2, 3, 3) whose pixels spell out their own index (low byte, high byte); labels = index."""
    index = torch.arange(count)
    images = torch.stack([index % 256, index // 256], dim=1).to(torch.uint8)[:, :, None, None].expand(-1, -1, 3, 3)
    return images.contiguous(), index


def decode(images: torch.Tensor) -> torch.Tensor:
    """The index each image spells out."""
    return images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()


def epoch_labels(loader: TensorBatchLoader | list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Labels of one pass over ``loader``, checking that every image matches its label."""
    labels = []
    for images, batch_labels in loader:
        assert torch.equal(decode(images), batch_labels)
        labels.append(batch_labels)
    return torch.cat(labels)


def test_every_sample_once_per_epoch_with_a_new_order_each_epoch() -> None:
    images, labels = indexed_set(300)
    loader = TensorBatchLoader(images, labels, 32, shuffle=True, seed=4)
    assert len(loader) == 10  # ceil(300 / 32)
    first, second = epoch_labels(loader), epoch_labels(loader)
    assert torch.equal(first.sort().values, torch.arange(300))
    assert torch.equal(second.sort().values, torch.arange(300))
    assert not torch.equal(first, second)
    batches = [batch_labels for _, batch_labels in loader]
    assert [len(batch_labels) for batch_labels in batches] == [32] * 9 + [12]
    assert all(torch.equal(batch_labels, batch_labels.sort().values) for batch_labels in batches)  # sorted gather


def test_order_is_a_function_of_seed_and_epoch() -> None:
    images, labels = indexed_set(200)
    one = TensorBatchLoader(images, labels, 16, shuffle=True, seed=7)
    two = TensorBatchLoader(images, labels, 16, shuffle=True, seed=7)
    other_seed = TensorBatchLoader(images, labels, 16, shuffle=True, seed=8)
    one.set_epoch(3)
    two.set_epoch(3)
    other_seed.set_epoch(3)
    order = epoch_labels(one)
    assert torch.equal(order, epoch_labels(two))
    assert not torch.equal(order, epoch_labels(other_seed))
    assert one.epoch == 4


def test_without_shuffle_samples_come_in_index_order() -> None:
    images, labels = indexed_set(50)
    loader = TensorBatchLoader(images, labels, 8)
    assert torch.equal(epoch_labels(loader), torch.arange(50))
    assert torch.equal(epoch_labels(loader), torch.arange(50))


def test_each_rank_takes_a_contiguous_block_of_every_global_batch() -> None:
    images, labels = indexed_set(256)
    one = TensorBatchLoader(images, labels, 32, shuffle=True, seed=1)
    ranks = [TensorBatchLoader(images, labels, 32, shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 8  # batch_size is the global batch
    for whole, *blocks in zip(one, *ranks, strict=True):
        assert [len(block[1]) for block in blocks] == [16, 16]
        assert torch.equal(torch.cat([block[1] for block in blocks]), whole[1])  # rank order = one-process order
        assert all(torch.equal(decode(block[0]), block[1]) for block in blocks)


def test_a_smaller_last_batch_splits_unevenly_and_random_transforms_follow_the_samples() -> None:
    images, labels = indexed_set(101)
    generator = torch.Generator().manual_seed(0)
    noise = lambda batch: batch.float() + torch.rand(batch.shape, generator=generator)  # noqa: E731
    whole = list(TensorBatchLoader(images, labels, 10, shuffle=True, transform=noise))
    blocks = []
    for rank in (0, 1):
        generator.manual_seed(0)  # every rank's generator in the same state
        options = {"shuffle": True, "transform": noise, "rank": rank, "world_size": 2}
        blocks.append(list(TensorBatchLoader(images, labels, 10, **options)))
    assert [len(batch[1]) for batch in blocks[0]] == [5] * 10 + [1]
    assert [len(batch[1]) for batch in blocks[1]] == [5] * 10 + [0]
    for one, first, second in zip(whole, *blocks, strict=True):
        assert torch.equal(torch.cat([first[0], second[0]]), one[0])  # each sample gets its one-process noise
    dropped = TensorBatchLoader(images, labels, 10, drop_last=True, shuffle=True, rank=1, world_size=2)
    assert len(dropped) == 10
    with pytest.raises(ValueError, match="multiple of 2"):
        TensorBatchLoader(images, labels, 9, rank=0, world_size=2)


def test_rank_blocks_split_like_tensor_split() -> None:
    for count in (0, 1, 7, 8, 9):
        expected = torch.arange(count).tensor_split(3)
        for rank in range(3):
            assert torch.equal(torch.arange(count)[rank_block(count, rank, 3)], expected[rank])


def test_evaluation_blocks_cover_the_sets_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    sets = [indexed_set(7), (indexed_set(12)[0][3:], torch.arange(3, 12))]  # labels = the index each image spells
    seen = []
    for rank in range(3):
        monkeypatch.setattr(idist, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(idist, "get_world_size", lambda: 3)
        loaders = evaluation_loaders(sets, 4, transform=None)
        assert all(loader.batch_size == 2 for loader in loaders)  # the global batch over 3 ranks, rounded up
        seen.extend(epoch_labels(loader) for loader in loaders)
    assert torch.equal(torch.cat(seen), torch.cat([torch.arange(7), torch.arange(3, 12)]))
    monkeypatch.setattr(idist, "get_world_size", lambda: 20)
    with pytest.raises(ValueError, match="16 samples cannot be evaluated by 20 processes"):
        evaluation_loaders(sets, 4)


def test_drop_last_keeps_only_full_batches() -> None:
    images, labels = indexed_set(103)
    loader = TensorBatchLoader(images, labels, 10, shuffle=True, drop_last=True)
    assert len(loader) == 10
    sizes = [len(batch_labels) for _, batch_labels in loader]
    assert sizes == [10] * 10
    with pytest.raises(ValueError, match="no batch"):
        TensorBatchLoader(images, labels, 200, drop_last=True)


def test_transform_runs_on_the_images_only() -> None:
    images, labels = indexed_set(20)
    loader = TensorBatchLoader(images, labels, 8, transform=to_float)
    batch_images, batch_labels = next(iter(loader))
    assert batch_images.dtype == torch.float32
    assert torch.allclose(batch_images, images[:8].float() / 255)
    assert torch.equal(batch_labels, labels[:8])


def test_memory_mapped_npy_gives_the_same_batches(tmp_path: Path) -> None:
    images, labels = indexed_set(120)
    np.save(tmp_path / "images.npy", images.numpy())
    mapped = torch.from_numpy(np.load(tmp_path / "images.npy", mmap_mode="c"))
    in_memory = TensorBatchLoader(images, labels, 25, shuffle=True, seed=2)
    from_disk = TensorBatchLoader(mapped, labels, 25, shuffle=True, seed=2)
    for (ours, our_labels), (theirs, their_labels) in zip(in_memory, from_disk, strict=True):
        assert torch.equal(ours, theirs) and torch.equal(our_labels, their_labels)


def test_rejects_misaligned_labels() -> None:
    images, labels = indexed_set(10)
    with pytest.raises(ValueError, match=r"labels: expected shape \(10,\)"):
        TensorBatchLoader(images, labels[:9], 4)


def record_epochs(engine: Engine) -> dict[int, list[torch.Tensor]]:
    seen: dict[int, list[torch.Tensor]] = {}
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.setdefault(e.state.epoch, []).append(e.state.output)
    )
    return seen


def check_batch(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    images, labels = batch
    assert torch.equal(decode(images), labels)
    return labels


def test_ignite_engine_runs_two_epochs_and_resumes_mid_epoch_in_the_same_order() -> None:
    images, labels = indexed_set(90)
    loader = TensorBatchLoader(images, labels, 16, shuffle=True, seed=3)
    trainer = Engine(check_batch)
    make_reproducible(trainer, seed=0)
    seen = record_epochs(trainer)
    trainer.run(loader, max_epochs=2)
    orders = {epoch: torch.cat(batches) for epoch, batches in seen.items()}
    assert sorted(orders) == [1, 2]
    assert all(torch.equal(order.sort().values, torch.arange(90)) for order in orders.values())
    assert not torch.equal(orders[1], orders[2])

    resumed = Engine(check_batch)
    resumed.load_state_dict({"iteration": len(loader) + 2, "max_epochs": 2, "epoch_length": len(loader)})
    make_reproducible(resumed, seed=0)
    seen_after_resume = record_epochs(resumed)
    resumed.run(TensorBatchLoader(images, labels, 16, shuffle=True, seed=3))
    assert torch.equal(torch.cat(seen_after_resume[2]), orders[2][2 * 16 :])


def test_paired_loader_resumed_mid_epoch_gives_the_same_pairs() -> None:
    def make() -> PairedLoader:
        return PairedLoader(
            TensorBatchLoader(*indexed_set(40), 8, shuffle=True, seed=1),
            TensorBatchLoader(*indexed_set(12), 5, shuffle=True, drop_last=True, seed=2),
        )

    paired = make()
    uninterrupted = [(batch[1], outliers[1]) for _ in range(3) for batch, outliers in paired]
    resumed = make()
    resumed.set_epoch(1)
    resumed.skip_batches(3)
    after = [(batch[1], outliers[1]) for batch, outliers in resumed] + [
        (batch[1], outliers[1]) for batch, outliers in resumed
    ]
    expected = uninterrupted[len(paired) + 3 :]
    assert len(after) == len(expected)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after, expected, strict=True))


def test_paired_loader_cycles_the_outliers_through_new_permutations() -> None:
    images, labels = indexed_set(64)
    outlier_images, outlier_labels = indexed_set(10)
    in_distribution = TensorBatchLoader(images, labels, 8, shuffle=True)
    outliers = TensorBatchLoader(outlier_images, outlier_labels, 4, shuffle=True, drop_last=True, seed=9)
    paired = PairedLoader(in_distribution, outliers)
    assert len(paired) == 8
    pairs = list(paired) + list(paired)
    assert len(pairs) == 16
    assert torch.equal(torch.cat([epoch_labels([batch]) for batch, _ in pairs[:8]]).sort().values, torch.arange(64))
    outlier_order = torch.cat([epoch_labels([outlier_batch]) for _, outlier_batch in pairs])
    assert len(outlier_order) == 16 * 4
    rounds = outlier_order.reshape(8, 8)  # 2 batches of 4 per outlier epoch, so 8 samples per round
    assert all(len(set(round_.tolist())) == 8 for round_ in rounds)
    assert len({tuple(round_.tolist()) for round_ in rounds}) > 1
