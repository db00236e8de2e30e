"""``--set KEY=VALUE`` and ``--show-config``: typed overrides of every paper's configuration, recorded and resumed."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import yaml

import main
from common import runner
from common.cells import Settings
from common.overrides import apply_overrides, show_config
from tests.helpers import toy_paper

PAPERS = ("invglow", "mchad", "gaussian_ad", "memae")


@pytest.fixture()
def runs(monkeypatch, tmp_path):
    """Runs go under tmp_path/runs (which no test here should create unless it runs cells)."""
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture()
def toy(monkeypatch, runs):
    """Only the toy paper (tests/helpers/toy_paper.py) exists."""
    monkeypatch.setattr(main, "PAPER_MODULES", {"toy": main.PaperModule("tests.helpers.toy_paper", "Toy et al.")})
    toy_paper.CALLS.clear()
    return runs


def _memae_plan(*overrides: str) -> runner.Plan:
    paper = importlib.import_module("memae.experiments").PAPER
    return runner.plan(paper, paper.experiment("image_table"), Settings("demo", overrides=overrides))


@pytest.mark.parametrize("scale", ["demo", "paper"])
@pytest.mark.parametrize("name", PAPERS)
def test_every_configuration_converts_back_to_equal_dataclasses(name, scale):
    paper = importlib.import_module(f"{name}.experiments").PAPER
    for experiment in (e for e in paper.experiments if scale in e.scales):
        config = experiment.configure(Settings(scale))
        assert apply_overrides(config, []) == config, f"{name}/{experiment.name} at {scale}"
        assert list(yaml.safe_load(show_config(config))) == [item.name for item in dataclasses.fields(config)]


def test_int_float_str_tuple_null_and_nested_overrides_reach_the_plan():
    run_plan = _memae_plan(
        "image_table.0.train.epochs=2",
        "image_table.0.train.learning_rate=0.01",
        "image_table.0.memory.similarity=dot",
        "seeds=[3, 4]",
        "cpu_threads=null",
        "image_table.0.memory={num_slots: 20, shrink_threshold: 0.05}",
    )
    setting = run_plan.config.image_table[0]
    assert (setting.train.epochs, setting.train.learning_rate, setting.memory.similarity) == (2, 0.01, "dot")
    assert (setting.memory.num_slots, setting.memory.shrink_threshold) == (20, 0.05)
    assert run_plan.config.seeds == (3, 4) and run_plan.config.cpu_threads is None
    assert {cell.id.rsplit("/", 1)[1] for cell in run_plan.cells} == {"seed-3", "seed-4"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("image_table.0.train.epochs=abc", "epochs=abc: image_table.0.train.epochs expects an int"),
        ("image_table.0.memory.similarity=[1]", "image_table.0.memory.similarity expects a string"),
        ("image_table.0.train.epoch=2", "no key image_table.0.train.epoch; keys of image_table.0.train: epochs,"),
        ("image_table.0.data.name=no-such-set", "--set image_table.0.data.name: 'no-such-set' is not a dataset"),
        ("image_table.0.data.name=lsun", "dataset lsun has no train split (splits: test)"),
        ("image_table.0.data.classes.0=3", "image_table.0.data.classes is a tuple, set whole"),
        ("image_table.0.memory.threshold_on_resize=odd", "threshold_on_resize must be one of"),
        ("seeds", "--set seeds: expected KEY=VALUE"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key_and_creates_nothing(runs, capsys, override, message):
    assert main.main(["memae", "image_table", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: memae/image_table: --set ") and len(err.strip().splitlines()) == 1
    assert message in err
    assert not runs.exists()


def test_show_config_prints_the_overridden_yaml_and_runs_nothing(runs, capsys):
    assert main.main(["memae", "image_table", "--show-config", "--set", "image_table.0.train.epochs=7"]) == 0
    header, _, body = capsys.readouterr().out.partition("\n")
    assert header == "memae/image_table (scale demo):"
    assert yaml.safe_load(body)["image_table"][0]["train"]["epochs"] == 7
    assert not runs.exists()


def test_overrides_are_recorded_and_resume_keeps_them_or_refuses_others(toy, capsys):
    first = ["toy", "table1", "--run-name", "r", "--set", "epochs=2", "--cells", "toy/table1/pretrain/seed-0"]
    assert main.main(first) == 0
    run_dir = toy / "toy/table1/r"
    record = json.loads((run_dir / "config.json").read_text())
    assert record["settings"]["overrides"] == ["epochs=2"] and record["config"]["epochs"] == 2
    capsys.readouterr()
    refusals = {
        ("--resume", str(run_dir)): "--set epochs=5 conflicts with the run's recorded overrides epochs=2",
        ("--run-name", "r"): "'overrides': ['epochs=5'], 'checkpoints': None}; nothing in it was touched",  # shared
    }
    for folder, message in refusals.items():
        assert main.main(["toy", "table1", *folder, "--set", "epochs=5"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    alpha = ["--cells", "toy/table1/alpha/*"]
    assert main.main(["toy", "table1", "--resume", str(run_dir), "--set", "epochs=2", *alpha]) == 0  # the same
    assert main.main(["toy", "--resume", str(run_dir)]) == 0  # no --set: the recorded ones
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert [row["ours"] for row in rows] == [57.0, 67.0]  # 2 epochs, seeds 0 and 1: 0.5 + 0.01·(10·seed + 2) (+ 0.1)
    assert all(row["table"].endswith(" [--set epochs=2]") for row in rows)  # an overridden table says so
    assert main.main(["toy", "table1", "--run-name", "plain"]) == 0  # newer, without --set: reported beside it
    assert main.report(toy, "toy").count("[--set epochs=2]") == len({row["table"] for row in rows})


def test_the_python_api_takes_overrides_and_settings_record_them(toy):
    rows = main.run_paper("toy", ["table1"], main.RunOptions(overrides="epochs=4", seeds=[0], progress=False))
    assert [row.ours for row in rows] == [54.0, 64.0]
    settings = Settings("paper", overrides=("a.b=1", "c=[2]"))
    assert Settings.from_record(json.loads(json.dumps(settings.as_record()))) == settings
    assert Settings.from_record({"scale": "demo"}).overrides == ()  # a config.json written before --set
