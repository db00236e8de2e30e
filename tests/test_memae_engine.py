"""MemAE's one-class data protocol, Ignite engines and few-shot memory strategies."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ignite.engine import Events
from sklearn.metrics import roc_auc_score

from common.datasets import ImageSet
from common.loaders import TensorBatchLoader
from common.results import NOT_PUBLISHED, Published
from memae import paper
from memae.config import CONFIGS
from memae.data import ANOMALY_FRACTION, one_class_test_set, training_set
from memae.engine import SelectionAccuracy, create_evaluator, create_trainer, memory_indices
from memae.few_shot import (
    STRATEGIES,
    conditional_to_deleted,
    copy_best_fitting,
    copy_samples,
    delete_memory,
    encode_queries,
    freeze,
)
from memae.memory import ConditionalMemory, MemoryModule
from memae.models import build_model
from memae.scores import anomaly_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def labelled_images(counts: dict[int, int], size: int = 16, seed: int = 0) -> ImageSet:
    """Random uint8 grey images with ``counts[c]`` images of class c; class c is brighter for larger c."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in counts.items()])
    noise = torch.randint(0, 60, (len(labels), 1, size, size), generator=generator)
    return ImageSet((noise + 20 * labels[:, None, None, None]).clamp(0, 255).to(torch.uint8), labels)


def test_one_class_test_set_has_all_normals_and_30_percent_anomalies():
    data = labelled_images({0: 70, 1: 40, 2: 40})
    test = one_class_test_set(data, 0, np.random.default_rng(0))
    assert (test.labels == 0).sum() == 70
    assert (test.labels != 0).sum() == int(70 * ANOMALY_FRACTION / (1 - ANOMALY_FRACTION)) == 30
    again = one_class_test_set(data, 0, np.random.default_rng(0))
    assert torch.equal(test.labels, again.labels) and torch.equal(test.images, again.images)
    other = one_class_test_set(data, 0, np.random.default_rng(1))
    assert not torch.equal(test.images, other.images)


def test_training_set_keeps_the_classes_and_draws_shots_per_class():
    data = labelled_images({0: 10, 1: 12, 2: 5})
    assert sorted(training_set(data, [0, 2]).labels.tolist()) == [0] * 10 + [2] * 5
    shots = training_set(data, [0, 1], shots=3, rng=np.random.default_rng(0))
    assert sorted(shots.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_data_errors_name_the_problem():
    data = labelled_images({0: 10, 1: 3})
    with pytest.raises(ValueError, match=r"class\(es\) \[7\] have no training images"):
        training_set(data, [0, 7])
    with pytest.raises(ValueError, match=r"shots=5 exceeds the training images of class\(es\) \{1: 3\}"):
        training_set(data, [1], shots=5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="have no test images"):
        one_class_test_set(data, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too few for one anomaly"):
        one_class_test_set(labelled_images({0: 2, 1: 5}), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="anomalies needed"):
        one_class_test_set(data, 0, np.random.default_rng(0), anomaly_fraction=0.5)
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] are not in the target group \(0, 1\)"):
        memory_indices(torch.tensor([0, 3, 1]), (0, 1))
    assert memory_indices(torch.tensor([5, 2, 5]), (2, 5)).tolist() == [1, 0, 1]


def test_conditional_training_updates_only_the_memory_of_the_true_label():
    torch.manual_seed(0)
    model = build_model("digits-flat", "cmemae", num_slots=6, shrink_threshold=0.1, num_conditions=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = [memory.memory.detach().clone() for memory in model.bottleneck.memories]
    trainer = create_trainer(model, optimizer, 2e-4, group=(3, 8))
    trainer.run([(torch.randn(4, 1, 16, 16), torch.tensor([8, 8, 8, 8]))], max_epochs=1)
    assert torch.equal(model.bottleneck.memories[0].memory, before[0])  # class 3: not read, not changed
    assert not torch.equal(model.bottleneck.memories[1].memory, before[1])
    assert set(trainer.state.output) == {"loss", "mse", "entropy"}
    with pytest.raises(ValueError, match="not in the target group"):
        trainer.run([(torch.randn(2, 1, 16, 16), torch.tensor([3, 4]))], max_epochs=2)


def test_training_lowers_the_loss():
    torch.manual_seed(1)
    model = build_model("digits", "memae", num_slots=20, shrink_threshold=0.05)
    trainer = create_trainer(model, torch.optim.Adam(model.parameters(), lr=3e-3), 2e-4)
    batch = (torch.rand(16, 1, 16, 16) * 2 - 1, torch.zeros(16, dtype=torch.int64))
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output["loss"]))
    trainer.run([batch], max_epochs=30)
    assert losses[-1] < 0.7 * losses[0]


def test_evaluator_auroc_equals_sklearn_on_the_score_path():
    torch.manual_seed(2)
    model = build_model("digits", "memae", num_slots=20, shrink_threshold=0.05)
    test = one_class_test_set(labelled_images({0: 30, 1: 20, 2: 20}), 0, np.random.default_rng(0))
    loader = TensorBatchLoader(test.images, test.labels, 8, transform=lambda u: u.float() / 127.5 - 1)
    evaluator = create_evaluator(model, 0)
    evaluator.run(loader)
    scores = torch.cat([anomaly_scores(model, images)[0] for images, _ in loader])
    labels = torch.cat([labels for _, labels in loader])
    expected = roc_auc_score((labels != 0).numpy(), scores.numpy())
    assert evaluator.state.metrics["AUROC"] == pytest.approx(expected, abs=1e-12)


def test_self_selection_evaluator_reports_selection_accuracy():
    model = build_model("digits-flat", "cmemae", num_slots=4, shrink_threshold=0.0, num_conditions=2)
    data = labelled_images({0: 6, 1: 6, 2: 4})
    loader = TensorBatchLoader(data.images, data.labels, 5, transform=lambda u: u.float() / 127.5 - 1)
    evaluator = create_evaluator(model, 1, group=(0, 1), known_condition=False)
    evaluator.run(loader)
    selected, expected = [], []
    for images, labels in loader:
        out = anomaly_scores(model, images)[2]
        inside = labels < 2  # class 2 is outside the group and not counted
        selected.append(out.selection[inside])
        expected.append(labels[inside])
    accuracy = (torch.cat(selected) == torch.cat(expected)).double().mean().item()
    assert evaluator.state.metrics["selection_accuracy"] == pytest.approx(accuracy)
    with pytest.raises(ValueError, match="normal class 2 is not in the target group"):
        create_evaluator(model, 2, group=(0, 1))


def test_selection_accuracy_on_a_hand_made_case():
    metric = SelectionAccuracy()
    metric.update((torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, -1])))
    metric.update((torch.tensor([1]), torch.tensor([1])))
    assert metric.compute() == pytest.approx(3 / 4)


@pytest.fixture()
def pretrained() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    single = build_model("digits-flat", "memae", num_slots=10, shrink_threshold=0.1).eval()
    conditional = build_model("digits-flat", "cmemae", num_slots=10, shrink_threshold=0.1, num_conditions=3).eval()
    return single, conditional, torch.randn(5, 1, 16, 16)


def test_copy_samples_fills_the_memory_with_the_shot_encodings(pretrained):
    single, _, shots = pretrained
    before = {key: value.clone() for key, value in single.state_dict().items()}
    model = copy_samples(single, shots)
    with torch.no_grad():
        encodings = single.encoder(shots).flatten(1)
    assert model.bottleneck.num_slots == 5
    torch.testing.assert_close(model.bottleneck.memory, encodings)
    assert all(torch.equal(value, single.state_dict()[key]) for key, value in before.items())  # source untouched


def test_copy_best_fitting_takes_the_most_similar_slot_of_any_memory(pretrained):
    _, conditional, shots = pretrained
    model = copy_best_fitting(conditional, shots)
    queries = encode_queries(conditional, shots)
    slots = [slot for memory in conditional.bottleneck.memories for slot in memory.memory.detach()]
    for query, chosen in zip(queries, model.bottleneck.memory, strict=True):
        cosines = [torch.nn.functional.cosine_similarity(query, slot, dim=0) for slot in slots]
        assert torch.equal(chosen, slots[int(torch.stack(cosines).argmax())])
    assert isinstance(model.bottleneck, MemoryModule) and not model.conditional


def test_memory_resets_and_freeze(pretrained):
    single, conditional, shots = pretrained
    fresh = delete_memory(single, shots)
    assert fresh.bottleneck.num_slots == 10 and not torch.equal(fresh.bottleneck.memory, single.bottleneck.memory)
    assert torch.equal(fresh.encoder[0].weight, single.encoder[0].weight)
    deleted = conditional_to_deleted(conditional, shots)
    assert isinstance(deleted.bottleneck, MemoryModule) and deleted.bottleneck.num_slots == 10
    assert float(deleted.bottleneck.shrink_threshold) == pytest.approx(0.1)
    frozen = freeze(single, shots)
    assert not any(p.requires_grad for p in frozen.parameters()) and all(p.requires_grad for p in single.parameters())
    with pytest.raises(ValueError, match="needs a conditional C-MemAE"):
        copy_best_fitting(single, shots)
    with pytest.raises(ValueError, match="needs a single-memory MemAE"):
        STRATEGIES["transfer"].apply(conditional, shots)
    assert isinstance(conditional.bottleneck, ConditionalMemory)


def test_conditional_settings_are_checked():
    setting = CONFIGS["demo"].conditional[0]
    with pytest.raises(ValueError, match="few-shot sources must be trained here"):
        replace(setting, groups=((2, 3),))
    with pytest.raises(ValueError, match="must differ from the pretrained classes"):
        replace(setting, few_shot=replace(setting.few_shot, new_classes=(1, 2)))
    with pytest.raises(ValueError, match="distinct classes"):
        replace(setting, groups=((0, 1), (4, 4)))


def test_non_sparse_variant_and_published_numbers():
    memory = CONFIGS["paper"].image_table[0].memory
    assert (memory.num_slots, memory.shrink_threshold, memory.entropy_weight) == (100, 0.01, 2e-4)
    plain = memory.without_sparsity()
    assert (plain.shrink_threshold, plain.entropy_weight, plain.num_slots) == (0.0, 0.0, 100)
    assert paper.published(paper.IMAGE_TABLE, "MemAE", "CIFAR-10") == Published(pytest.approx(60.88), None)
    assert paper.published(paper.IMAGE_TABLE, "OC-SVM", "MNIST") == NOT_PUBLISHED  # unverified: absent, not guessed
    assert paper.published("Image table: AUROC (%) per class", "MemAE", "MNIST 3") == NOT_PUBLISHED
