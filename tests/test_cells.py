"""The cell contract and its runner: ids, order, selection, shards, run folders, locks and concurrent processes."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import folder_locations
from common import runner
from common.cells import Cell, RunContext, Settings, cell_folder, check_cell_id, checked_cells, read_cell_result
from common.errors import DataError, MissingDataError, UsageError
from common.files import FileLock
from tests.helpers import toy_paper

TOY = toy_paper.PAPER


def _noop(context: RunContext) -> dict:
    return {}


def _plan(settings: Settings | None = None) -> runner.Plan:
    return runner.plan(TOY, TOY.experiment("table1"), settings or Settings())


def _context(run_dir: Path, run_plan: runner.Plan) -> RunContext:
    return RunContext(
        paper="toy",
        experiment="table1",
        settings=run_plan.settings,
        config=run_plan.config,
        run_dir=run_dir,
        device=torch.device("cpu"),
        progress=False,
    )


def _run(run_dir: Path, cells: list[Cell] | None = None, settings: Settings | None = None) -> runner.Outcome:
    run_plan = _plan(settings)
    runner.open_run_folder(run_plan, run_dir)
    return runner.run_cells(run_plan, list(run_plan.cells) if cells is None else cells, _context(run_dir, run_plan),
                           log=lambda line: None)  # fmt: skip


@pytest.mark.parametrize(
    "bad", ["toy/table1", "toy/table1/has space", "toy/table1/../x", "toy//x", "toy/table1/a→b", "toy/table1/"]
)
def test_cell_ids_are_safe_folder_paths(bad):
    with pytest.raises(ValueError, match="cell id"):
        check_cell_id(bad)
    check_cell_id("mchad/main_table/cifar10/g-mchad/seed-3")


def test_cells_come_after_what_they_need_and_bad_graphs_are_refused():
    a, b = Cell("p/e/a", _noop, needs=("p/e/b",)), Cell("p/e/b", _noop)
    assert [cell.id for cell in checked_cells("p", "e", [a, b])] == ["p/e/b", "p/e/a"]
    with pytest.raises(ValueError, match="declared twice"):
        checked_cells("p", "e", [b, b])
    with pytest.raises(ValueError, match="not under p/e/"):
        checked_cells("p", "e", [Cell("p/other/x", _noop)])
    with pytest.raises(ValueError, match="needs 'p/e/missing'"):
        checked_cells("p", "e", [Cell("p/e/a", _noop, needs=("p/e/missing",))])
    cycle = [Cell("p/e/a", _noop, needs=("p/e/b",)), Cell("p/e/b", _noop, needs=("p/e/a",))]
    with pytest.raises(ValueError, match="cycle: p/e/a → p/e/b → p/e/a"):
        checked_cells("p", "e", cycle)


def test_settings_round_trip_and_refuse_bad_values():
    settings = Settings("paper", (3, 1), 7)
    assert Settings.from_record(json.loads(json.dumps(settings.as_record()))) == settings
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        Settings(epochs=0)
    with pytest.raises(ValueError, match=r"seeds must be integers in \[0, 2\*\*32\), got -1"):
        Settings(seeds=(0, -1))
    with pytest.raises(ValueError, match="unknown settings colour"):
        Settings.from_record({"scale": "demo", "colour": "red"})


def test_patterns_select_cells_and_a_pattern_matching_nothing_is_refused():
    run_plan = _plan()
    (chosen,) = runner.select([run_plan], ["toy/table1/alpha/*"])
    assert [cell.id for cell in chosen] == ["toy/table1/alpha/seed-0", "toy/table1/alpha/seed-1"]
    with pytest.raises(UsageError, match="--cells toy/nothing/\\*: matches no cell of toy/table1"):
        runner.select([run_plan], ["toy/table1/alpha/*", "toy/nothing/*"])


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_cover_every_cell_and_do_not_change_between_calls(count):
    plans = [_plan(), _plan(Settings(seeds=(5,)))]
    shards = [runner.select(plans, (), (index, count)) for index in range(1, count + 1)]
    ids = [cell.id for shard in shards for cells in shard for cell in cells]
    everything = [cell.id for p in plans for cell in p.cells]
    assert sorted(ids) == sorted(everything)
    assert len(ids) == len(everything)
    assert shards == [runner.select(plans, (), (index, count)) for index in range(1, count + 1)]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/2/3"])
def test_bad_shards_are_refused(text):
    with pytest.raises(UsageError, match=f"--shard {text}"):
        runner.parse_shard(text)


def test_a_selected_cell_brings_only_its_unfinished_prerequisites(tmp_path):
    run_plan = _plan()
    alpha = run_plan.by_id["toy/table1/alpha/seed-1"]
    assert [c.id for c in runner.with_prerequisites(run_plan, [alpha], tmp_path)] == [
        "toy/table1/pretrain/seed-1",
        "toy/table1/alpha/seed-1",
    ]
    _run(tmp_path, [run_plan.by_id["toy/table1/pretrain/seed-1"]])
    assert [c.id for c in runner.with_prerequisites(run_plan, [alpha], tmp_path)] == ["toy/table1/alpha/seed-1"]


def test_a_run_writes_one_result_per_cell_and_the_table_once_all_are_done(tmp_path):
    toy_paper.CALLS.clear()
    run_plan = _plan()
    first = _run(tmp_path, [run_plan.by_id["toy/table1/beta/seed-0"]])
    assert first.ran == ("toy/table1/pretrain/seed-0", "toy/table1/beta/seed-0")
    assert first.rows is None and not (tmp_path / "results.json").exists()
    assert read_cell_result(tmp_path, "toy/table1/pretrain/seed-0") == {"base": 3}
    second = _run(tmp_path)
    assert set(second.ran) == {c.id for c in run_plan.cells} - set(first.ran), "finished cells are not rerun"
    assert toy_paper.CALLS.count("toy/table1/pretrain/seed-0") == 1
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(row["row"], row["ours"], row["paper_spread"]) for row in rows] == [
        ("alpha", 58.0, 1.5),
        ("beta", 68.0, None),
    ]
    assert rows[0]["spread_kind"] == "std (ddof 1) over seeds"
    alpha = run_plan.by_id["toy/table1/alpha/seed-0"]
    assert runner.cell_state(tmp_path, alpha) == "done"
    assert (
        runner.cell_line(alpha, "done") == "toy/table1/alpha/seed-0  done  50 images  needs toy/table1/pretrain/seed-0"
    )


def test_a_cell_result_names_its_file_when_missing_or_foreign(tmp_path):
    with pytest.raises(DataError, match="has not finished"):
        read_cell_result(tmp_path, "toy/table1/alpha/seed-0")
    folder = cell_folder(tmp_path, "toy/table1/alpha/seed-0")
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"id": "toy/table1/beta/seed-0", "values": {}}))
    with pytest.raises(DataError, match=r"alpha/seed-0/result\.json: .*belongs to cell 'toy/table1/beta/seed-0'"):
        read_cell_result(tmp_path, "toy/table1/alpha/seed-0")


def test_a_run_folder_of_other_settings_or_another_experiment_is_refused_and_left_untouched(tmp_path):
    _run(tmp_path / "run", settings=Settings(epochs=2))
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match=r"was started with .*'epochs': 2.*'epochs': 3.*nothing in it was touched"):
        runner.open_run_folder(_plan(Settings(epochs=3)), tmp_path / "run")
    paper_only = runner.plan(TOY, TOY.experiment("table9"), Settings("paper", None, 2))
    with pytest.raises(UsageError, match="is a run of toy/table1, not toy/table9"):
        runner.open_run_folder(paper_only, tmp_path / "run")
    assert before == {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}


def test_only_one_of_two_processes_creating_a_run_folder_records_it(tmp_path):
    assert runner._create_exclusively(tmp_path / "config.json", {"first": 1})
    assert not runner._create_exclusively(tmp_path / "config.json", {"second": 2})
    assert json.loads((tmp_path / "config.json").read_text()) == {"first": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"], "no temporary file left"


def test_a_cell_returning_something_else_than_named_values_writes_nothing(tmp_path):
    broken = Cell("toy/table1/pretrain/seed-0", lambda context: [1.0])
    run_plan = runner.Plan(TOY, TOY.experiment("table1"), Settings(), _plan().config, (broken,))
    with pytest.raises(TypeError, match="returned list, not a mapping"):
        runner.run_cells(run_plan, [broken], _context(tmp_path, run_plan), log=lambda line: None)
    assert not (cell_folder(tmp_path, broken.id) / "result.json").exists()


# ------------------------------------------------------------------------------------------ several processes
def _start_toy(args: list[str], hook: Path) -> subprocess.Popen:
    """``python main.py toy ...`` in a new process, its cells held until ``hook`` exists."""
    code = (
        "import sys, main; main.PAPER_MODULES['toy'] = main.PaperModule('tests.helpers.toy_paper', 'toy'); "
        f"sys.exit(main.main({['toy', *args, '--no-progress', '--device', 'cpu']!r}))"
    )
    env = {**os.environ, "TOY_CELL_HOOK": str(hook)}
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=folder_locations.REPOSITORY, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _two_processes(tmp_path: Path, first_args: list[str], first_line_of_second: Callable[[Path], str]) -> None:
    """Start a run, then a second process on its folder while the first holds its first cell; the second's first
    line must be ``first_line_of_second``. Both must finish cleanly, each cell run once, with one run's table."""
    hook = tmp_path / "go"
    first = _start_toy(["--output", str(tmp_path / "runs"), "--run-name", "r", *first_args], hook)
    _wait_for(Path(f"{hook}.started"), first)  # the first process is inside its first cell, holding its lock
    run_dir = tmp_path / "runs/toy/table1/r"
    assert runner.cell_state(run_dir, _plan().by_id["toy/table1/pretrain/seed-0"]) == "running"
    second = _start_toy(["--resume", str(run_dir)], hook)
    line = second.stdout.readline()
    assert line.rstrip() == first_line_of_second(run_dir)
    hook.touch()
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    outputs[1] = (line + outputs[1][0], outputs[1][1])
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert all("Traceback" not in err for _, err in outputs)
    ran = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("[")]
    settings = runner.read_recorded_run(run_dir).settings
    assert sorted(ran) == sorted(cell.id for cell in _plan(settings).cells), "every cell ran once in all"
    alone = tmp_path / "alone"
    _run(alone, settings=settings)
    assert json.loads((run_dir / "results.json").read_text()) == json.loads((alone / "results.json").read_text())


def test_a_second_process_takes_another_cell_rather_than_wait(tmp_path):
    # Two resumes (or two shards) of one run: the second starts the other seed's pretraining at once.
    _two_processes(tmp_path, [], lambda run_dir: "[1/6] toy/table1/pretrain/seed-1")


def test_a_second_process_waits_for_a_prerequisite_another_process_is_running(tmp_path):
    def waiting(run_dir: Path) -> str:
        holder = (run_dir / "pretrain/seed-0/.lock").read_text().strip()
        waits = "waiting for it, a cell here needs it"
        return f"toy/table1/pretrain/seed-0: running in another process ({holder}); {waits}"

    _two_processes(tmp_path, ["--seeds", "0"], waiting)


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tmp_path):
    hook = tmp_path / "never"
    run_dir = tmp_path / "runs/toy/table1/r"
    killed = _start_toy(["--output", str(tmp_path / "runs"), "--run-name", "r"], hook)
    _wait_for(Path(f"{hook}.started"), killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    pretrain = _plan().by_id["toy/table1/pretrain/seed-0"]
    assert (cell_folder(run_dir, pretrain.id) / ".lock").exists()
    assert runner.cell_state(run_dir, pretrain) == "pending"
    outcome = _run(run_dir)
    assert pretrain.id in outcome.ran and outcome.rows is not None


def test_a_cell_locked_elsewhere_that_nothing_here_needs_is_left_to_its_process(tmp_path):
    run_plan = _plan()
    held = runner.cell_lock(tmp_path, "toy/table1/beta/seed-1")
    assert held.acquire()  # flock conflicts between two open files, in one process as across processes
    try:
        lines: list[str] = []
        runner.open_run_folder(run_plan, tmp_path)
        outcome = runner.run_cells(run_plan, list(run_plan.cells), _context(tmp_path, run_plan), log=lines.append)
    finally:
        held.release()
    assert outcome.running_elsewhere == ("toy/table1/beta/seed-1",)
    assert outcome.rows is None and "toy/table1/beta/seed-1" not in outcome.ran
    assert [line for line in lines if "another process" in line] == [
        f"toy/table1/beta/seed-1: running in another process (pid {os.getpid()} on {os.uname().nodename} since "
        f"{held.holder().split(' since ')[1]}); left to it"
    ]
    assert runner.cell_state(tmp_path, run_plan.by_id["toy/table1/beta/seed-1"]) == "pending"


def test_a_file_lock_as_context_waits_for_its_holder(tmp_path):
    held, order = FileLock(tmp_path / "x.lock"), []
    assert held.acquire()

    def second() -> None:
        with FileLock(tmp_path / "x.lock"):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and order == [], "the second holder must wait"
    order.append("first")
    held.release()
    thread.join(10)
    assert order == ["first", "second"]


@pytest.mark.parametrize(
    "error",
    [DataError("a/b.bin", "truncated"), MissingDataError("c.mat", "Download it."), UsageError("--x 3: no")],
)
def test_errors_survive_a_pickle_round_trip(error):
    # A cell's error reaches the launcher from a worker process as a pickle.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
