"""The costs the cells declare: the totals ``--list-cells`` prints, hand-computed cases of every paper, and the demo
steps a real cell run records."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

import folder_locations
import main
from common.cells import Cost, Settings, read_cell_result
from common.costs import evaluation_count, training_cost
from common.datasets import sizes

PAPERS = tuple(main.PAPER_MODULES)
COST = re.compile(r"^(?:([\d,]+) steps)?(?:, )?(?:([\d,]+) images)?$")
TOTAL = re.compile(r"^(\w+/\w+): (\d+) cells?(?:, ([\d,]+) steps)?(?:, ([\d,]+) images)?$")


def _number(text: str | None) -> int:
    return int(text.replace(",", "")) if text else 0


def _declared(paper: str, experiment: str, scale: str) -> dict[str, Cost]:
    """Each cell's cost as the experiment declares it for ``scale``."""
    found = main.get_paper(paper).experiment(experiment)
    return {cell.id: cell.cost for cell in found.cells(found.configure(Settings(scale=scale)))}


def _listed(paper: str, scale: str) -> tuple[dict[str, Cost], dict[str, tuple[int, Cost]]]:
    """``--list-cells``: the cost printed on each cell's line, and per experiment its printed totals."""
    cells, totals = {}, {}
    for line in main.list_paper_cells(paper, options=main.RunOptions(scale=scale)).splitlines():
        if total := TOTAL.match(line):
            totals[total[1]] = (int(total[2]), Cost(_number(total[3]), _number(total[4])))
            continue
        cell_id, _, *rest = line.split("  ")
        printed = rest[0] if rest and not rest[0].startswith("needs ") else ""
        steps, images = COST.match(printed).groups()
        cells[cell_id] = Cost(_number(steps), _number(images))
    return cells, totals


@pytest.mark.parametrize("scale", ["demo", "paper"])
@pytest.mark.parametrize("paper", PAPERS)
def test_list_cells_prints_each_cells_cost_and_totals_that_are_their_sums(paper: str, scale: str) -> None:
    cells, totals = _listed(paper, scale)
    assert totals, "no experiment total printed"
    for name, (count, total) in totals.items():
        declared = _declared(*name.split("/"), scale)
        mine = {cell_id: cost for cell_id, cost in cells.items() if cell_id.startswith(f"{name}/")}
        assert mine == declared and count == len(declared)
        assert total == sum(declared.values(), Cost()) == sum(mine.values(), Cost())
        assert total.images > 0
        assert (total.steps > 0) == (paper != "gaussian_ad")  # Gaussian AD fits in closed form


def test_evaluations_follow_setup_handlers_schedule() -> None:
    """Every ``eval_every`` epochs, and after the last epoch unless it was just evaluated."""
    assert [evaluation_count(epochs, 4) for epochs in (1, 2, 4, 5, 8, 12)] == [1, 1, 1, 2, 2, 3]
    assert evaluation_count(250) == 250
    # 10 images in batches of 4: 3 batches (the last of 2), or 2 with drop_last, or 1 when capped
    assert training_cost(2, 10, 4, evaluated=7) == Cost(6, 2 * 10 + 2 * 7)
    assert training_cost(2, 10, 4, drop_last=True, outlier_batch_size=4) == Cost(4, 2 * (8 + 8))
    assert training_cost(3, 10, 4, max_batches=1, evaluated=1, eval_every=2) == Cost(3, 3 * 4 + 2)


# ----------------------------------------------------------------------------------------------- by hand
def test_mchad_paper_cost_by_hand() -> None:
    costs = _declared("mchad", "main_table", "paper")
    # CIFAR-10: 10 epochs of ⌈50,000 / 128⌉ = 391 batches; SVHN: ⌈73,257 / 128⌉ = 573 capped at 392
    assert costs["mchad/main_table/cifar10/mchad/seed-1"].steps == 10 * 391
    assert costs["mchad/main_table/svhn/g-cac/seed-21"].steps == 10 * 392
    assert costs["mchad/main_table/cifar100/ii/seed-3"].steps == 20 * 391
    # 10 evaluations of the 10,000 test images and 7 OOD sets: DTD 5,640 and six of 10,000
    evaluated = 10 * (10_000 + 5_640 + 6 * 10_000)
    assert costs["mchad/main_table/cifar10/center/seed-1"].images == 10 * 50_000 + evaluated
    assert costs["mchad/main_table/cifar10/g-center/seed-1"].images == 10 * (50_000 + 391 * 256) + evaluated
    assert sum(costs.values(), Cost()).steps == 21 * 7 * (3920 + 3910 + 7820)


def test_mchad_demo_cost_by_hand() -> None:
    config = main.get_paper("mchad").experiment("main_table").configure(Settings())
    (dataset,) = config.datasets
    counts = sizes.class_counts("digits", "train")
    n_train = sum(counts[: dataset.n_classes])
    assert (dataset.n_classes, n_train) == (6, 811)  # digits 0–5 of the 1,347 training digits
    steps = dataset.epochs * math.ceil(n_train / config.train.batch_size)
    costs = _declared("mchad", "main_table", "demo")
    assert {cost.steps for cost in costs.values()} == {steps}


def test_memae_paper_cost_by_hand() -> None:
    costs = _declared("memae", "image_table", "paper")
    # MNIST class 1: 6,742 training images in batches of 64 for 100 epochs; 20 evaluations (every 5 epochs) of its
    # 1,135 test images and ⌊1,135 · 0.3 / 0.7⌋ = 486 anomalies
    assert costs["memae/image_table/MNIST/MemAE/class-1/seed-2"] == Cost(100 * 106, 100 * 6742 + 20 * (1135 + 486))
    assert costs["memae/image_table/CIFAR-10/AE/class-3/seed-0"].steps == 100 * math.ceil(5000 / 64)
    conditional = _declared("memae", "conditional", "paper")
    # C-MemAE on MNIST 0 and 1: 5,923 + 6,742 images; each class evaluated with 3 memory selections
    group = conditional["memae/conditional/MNIST/cmemae/group-0-1/seed-0"]
    assert group == Cost(100 * math.ceil(12_665 / 64), 100 * 12_665 + 20 * 3 * (980 + 420 + 1135 + 486))
    assert conditional["memae/conditional/MNIST/few-shot/transfer/k-100/class-5/seed-1"].steps == 100 * 2
    assert conditional["memae/conditional/CIFAR-10/few-shot/freeze/k-1/class-2/seed-0"] == Cost(0, 1000 + 428)


def test_invglow_paper_cost_by_hand() -> None:
    costs = _declared("invglow", "tables", "paper")
    seed = "seed-20200610"
    # Tiny: 24,415 chunks of 64, the first round(0.8 · 24,415) = 19,532 chunks train: ⌊1,250,048 / 64⌋ steps
    assert costs[f"invglow/tables/tiny-pretrain/{seed}"].steps == 250 * 19_532
    # CIFAR-10 finetuning: ⌊50,000 / 64⌋ = 781 steps per epoch; with the outlier loss 64 Tiny images per step;
    # evaluated after every epoch on CIFAR-10 test and SVHN, CIFAR-100, LSUN, CelebA, TinyImageNet test
    evaluated = 10_000 + 26_032 + 10_000 + 3_000 + 19_962 + 10_000
    plain = costs[f"invglow/tables/finetune-cifar10/plain/{seed}"]
    assert plain == Cost(250 * 781, 250 * 781 * 64 + 250 * evaluated)
    assert costs[f"invglow/tables/finetune-cifar10/outlier-loss/{seed}"].images == plain.images + 250 * 781 * 64
    assert costs[f"invglow/tables/finetune-grey-mnist/plain/{seed}"].steps == 250 * (60_000 // 64)
    local = _declared("invglow", "local_vs_semantic", "paper")
    assert local[f"invglow/local_vs_semantic/dense-glow-svhn/{seed}"].steps == 250 * (73_257 // 64)


def test_invglow_demo_cost_by_hand() -> None:
    config = main.get_paper("invglow").experiment("tables").configure(Settings())
    costs = _declared("invglow", "tables", "demo")
    # the demo binary of 2,048 images gives ⌈2,048 / 64⌉ − 1 = 31 chunks, 25 of which train
    pretrain = costs["invglow/tables/tiny-pretrain/seed-0"]
    assert pretrain.steps == config.pretrain.epochs * (25 * 64 // config.pretrain.batch_size)
    finetune = costs["invglow/tables/finetune-digits-rgb/plain/seed-0"]
    assert finetune.steps == config.finetune.epochs * (config.data.demo_train // config.finetune.batch_size)


def test_gaussian_ad_costs_by_hand() -> None:
    costs = _declared("gaussian_ad", "table5", "paper")
    assert costs["gaussian_ad/table5/features/efficientnet-b4/bottle"] == Cost(images=209 + 83)
    assert costs["gaussian_ad/table5/augmented-100/efficientnet-b4/bottle"] == Cost(images=100 * 209)
    assert costs["gaussian_ad/table5/bottle/efficientnet-b4/mvg"] == Cost()
    assert sum(costs.values(), Cost()) == Cost(images=3629 + 1725 + 100 * 3629)
    demo = _declared("gaussian_ad", "table1", "demo")
    config = main.get_paper("gaussian_ad").experiment("table1").configure(Settings())
    per_category = config.n_train + config.n_test_good + 3 * config.n_test_defect  # three defect types
    assert sum(demo.values(), Cost()) == Cost(images=len(config.categories) * per_category)


# ----------------------------------------------------------------------------------------------- demo runs
@pytest.mark.parametrize(
    ("paper", "experiment", "cell_id"),
    [
        ("memae", "image_table", "memae/image_table/MNIST/AE/class-0/seed-0"),
        ("memae", "conditional", "memae/conditional/MNIST/few-shot/delete_memory/k-10/class-2/seed-0"),
        ("mchad", "main_table", "mchad/main_table/digits-0-5/softmax/seed-0"),
        ("invglow", "local_vs_semantic", "invglow/local_vs_semantic/full-glow-digits-rgb/seed-0"),
        ("invglow", "tables", "invglow/tables/tiny-pretrain/seed-0"),  # the demo Tiny binary cut into chunks
    ],
)
def test_a_demo_cell_runs_the_steps_it_declares(
    paper: str, experiment: str, cell_id: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo configuration as it is (not a smoke run): the steps the training recorded are the declared ones."""
    monkeypatch.setenv("OOD_REPRO_DATA", str(tmp_path / "data"))
    argv = [paper, experiment, "--cells", cell_id, "--output", str(tmp_path), "--run-name", "r", "--no-progress"]
    assert main.main([*argv, "--device", "cpu"]) == 0
    declared = _declared(paper, experiment, "demo")
    values = read_cell_result(tmp_path / paper / experiment / "r", cell_id)
    assert values["steps"] == declared[cell_id].steps > 0
    assert values["skipped_steps"] == 0


def test_costs_follow_the_configuration() -> None:
    """``--epochs`` and a changed batch are counted: the cost is computed from the resolved configuration."""
    found = main.get_paper("mchad").experiment("main_table")
    config = found.configure(Settings(scale="paper", epochs=1))
    config = replace(config, train=replace(config.train, batch_size=1000))
    steps = {cell.id.split("/")[2]: cell.cost.steps for cell in found.cells(config)}
    assert steps == {"svhn": 74, "cifar10": 50, "cifar100": 50}


# ----------------------------------------------------------------------------------------------- READMEs
def _rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row of ``text``, without bold and code marks."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip().replace("**", "").replace("`", "") for cell in row] for row in rows]


@pytest.mark.parametrize("paper", PAPERS)
def test_readmes_give_the_paper_scale_totals_the_code_counts(paper: str) -> None:
    """Each package README's cost table has a row with every experiment's cells, steps and images, and the main
    README's cluster table the paper's steps."""
    readme = (folder_locations.REPOSITORY / paper / "README.md").read_text()
    section = readme.split("## What the paper scale costs", 1)[1].split("\n## ", 1)[0]
    rows = [row[1:4] for row in _rows(section)]
    _, totals = _listed(paper, "paper")
    for count, cost in totals.values():
        assert [f"{count:,}", f"{cost.steps:,}", f"{cost.images:,}"] in rows
    steps = sum((cost for _, cost in totals.values()), Cost()).steps
    cluster = (folder_locations.REPOSITORY / "README.md").read_text().split("### Running the paper scale", 1)[1]
    (row,) = [row for row in _rows(cluster) if row[0] == paper]
    assert row[2].split()[0] == f"{steps:,}"
