"""Launchers: cells in a pool of local processes give the serial table bit for bit; Slurm jobs through submitit
are staged by dependency, skip finished cells, and each job re-runs its cell as ``main.py --cells`` would."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

import main
from common.launchers import gpu_slots
from tests.helpers import toy_paper


@pytest.fixture()
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(main.PAPER_MODULES, "toy", main.PaperModule("tests.helpers.toy_paper", "Toy et al."))
    toy_paper.CALLS.clear()
    return tmp_path / "runs"


def _rows(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["rows"]


def test_local_pool_runs_every_cell_once_and_gives_the_serial_table(toy, capsys):
    assert main.main(["toy", "--output", str(toy), "--run-name", "serial"]) == 0
    pool = ["--run-name", "pool", "--launcher", "local", "--max-parallel", "2"]
    assert main.main(["toy", "--output", str(toy), *pool]) == 0
    out = capsys.readouterr().out
    finished = [line.split()[1] for line in out.splitlines() if line.startswith("[") and "finished" in line]
    assert sorted(finished) == sorted(f"toy/table1/{m}/seed-{s}" for m in ("pretrain", "alpha", "beta") for s in (0, 1))
    assert [c for c in toy_paper.CALLS if c.startswith("toy")] == toy_paper.CALLS and len(toy_paper.CALLS) == 6, (
        "the pool's cells ran in worker processes, not here"
    )
    assert _rows(toy / "toy/table1/pool") == _rows(toy / "toy/table1/serial")


def test_a_cell_failing_in_a_worker_stops_the_pool_with_its_error(toy, monkeypatch, capsys):
    run = toy / "toy/table1/r"
    assert main.main(["toy", "--output", str(toy), "--run-name", "r", "--cells", "toy/table1/pretrain/seed-0"]) == 0
    (run / "pretrain/seed-0/result.json").write_text("{not json")  # the cells that need it cannot read it
    args = ["toy", "--output", str(toy), "--run-name", "r", "--launcher", "local", "--max-parallel", "2"]
    assert main.main(args) == 2
    assert "pretrain/seed-0/result.json: not a cell result written by this suite" in capsys.readouterr().err


def test_workers_get_one_gpu_each_round_robin(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert gpu_slots(3, "auto") == ["0", "1", "0"]
    assert gpu_slots(2, "cpu") == [None, None]


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` and ``srun`` on PATH: sbatch keeps each submission script and answers with job ids 101, 102, ..."""
    tools, record = tmp_path / "bin", tmp_path / "slurm-record"
    tools.mkdir()
    record.mkdir()
    (tools / "sbatch").write_text(
        "#!/bin/bash\n"
        f'n=$(cat "{record}/count" 2>/dev/null || echo 100); n=$((n+1)); echo $n > "{record}/count"\n'
        f'cp "$1" "{record}/sbatch-$n.sh"; echo "Submitted batch job $n"\n'
    )
    (tools / "srun").write_text("#!/bin/bash\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (tools / tool).chmod((tools / tool).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_submits_unfinished_cells_in_stages_that_wait_for_the_stage_before(toy, fake_slurm, capsys):
    common = ["toy", "--output", str(toy), "--run-name", "r"]
    assert main.main([*common, "--cells", "toy/table1/pretrain/seed-0"]) == 0  # one finished prerequisite
    args = [*common, "--launcher", "slurm", "--partition", "gpu", "--gpus-per-cell", "1", "--time", "90"]
    assert main.main(args) == 0
    out = capsys.readouterr().out
    assert "stage 0: 3 cell(s) submitted as job(s) 101" in out and "stage 1: 2 cell(s) submitted as job(s) 102" in out
    first, second = ((fake_slurm / f"sbatch-{n}.sh").read_text() for n in (101, 102))
    assert "#SBATCH --dependency" not in first and "#SBATCH --array=0-2%3" in first
    assert "#SBATCH --dependency=afterok:101" in second and "#SBATCH --array=0-1%2" in second
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90"):
        assert line in first and line in second
    run = toy / "toy/table1/r"
    jobs = [line.split("\t") for line in (run / "slurm/jobs.tsv").read_text().splitlines()[1:]]
    assert [(job, cell) for job, cell, _ in jobs] == [
        ("101_0", "toy/table1/pretrain/seed-1"),  # stage 0: needs nothing unfinished
        ("101_1", "toy/table1/alpha/seed-0"),
        ("101_2", "toy/table1/beta/seed-0"),
        ("102_0", "toy/table1/alpha/seed-1"),  # stage 1: needs pretrain/seed-1
        ("102_1", "toy/table1/beta/seed-1"),
    ]
    assert jobs[3][2].endswith(f"main.py toy table1 --resume {run} --cells toy/table1/alpha/seed-1 --no-progress")
    assert not toy_paper.CALLS[1:], "submitting runs nothing here"


def test_slurm_spreads_a_data_parallel_cell_over_its_gpus_and_refuses_it_elsewhere(toy, fake_slurm, capsys):
    args = ["--output", str(toy), "--run-name", "r", "--launcher", "slurm", "--gpus-per-cell", "4"]
    assert main.main(["toy", *args, "--cells", "toy/table1/pretrain/seed-0"]) == 0
    command = (toy / "toy/table1/r/slurm/jobs.tsv").read_text().splitlines()[1]
    assert command.endswith("--no-progress --nproc-per-node 4 --backend nccl")
    assert "#SBATCH --gpus-per-node=4" in (fake_slurm / "sbatch-101.sh").read_text()
    assert main.main(["memae", *args]) == 2
    assert "--gpus-per-cell 4: memae/image_table trains many small models" in capsys.readouterr().err


def test_slurm_without_sbatch_is_one_line(toy, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main.main(["toy", "--output", str(toy), "--launcher", "slurm"]) == 2
    assert "--launcher slurm: sbatch and srun not found on PATH" in capsys.readouterr().err


def test_a_slurm_job_runs_its_cell_as_main_py_would(tmp_path, fake_slurm, capsys):
    """Submit one real memae cell, then run the job's pickled function as the Slurm node would."""
    cell = "memae/image_table/MNIST/AE/class-3/seed-0"
    args = ["memae", "image_table", "--output", str(tmp_path), "--run-name", "r", "--epochs", "1", "--seeds", "0"]
    assert main.main([*args, "--cells", cell, "--launcher", "slurm", "--gpus-per-cell", "0", "--device", "cpu"]) == 0
    run = tmp_path / "memae/image_table/r"
    with (run / "slurm/101_submitted.pkl").open("rb") as handle:
        submission = pickle.load(handle)
    assert "--gpus-per-node" not in (fake_slurm / "sbatch-101.sh").read_text()
    submission.function()  # python main.py memae image_table --resume RUN --cells CELL --no-progress
    assert json.loads((run / "MNIST/AE/class-3/seed-0/result.json").read_text())["id"] == cell
    assert len(list(run.rglob("result.json"))) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["memae", "image_table", "--epochs", "1", "--cells", "memae/image_table/MNIST/MemAE/*"],
        ["memae", "conditional", "--epochs", "1", "--cells", "memae/conditional/*/few-shot/*/k-1/class-5/*"],
        ["mchad", "--epochs", "1"],
    ],
    ids=["memae-image", "memae-few-shot", "mchad"],
)
def test_demo_cells_in_two_local_processes_give_the_serial_results_bit_for_bit(tmp_path, args):
    common = [*args, "--output", str(tmp_path), "--device", "cpu", "--no-progress"]
    assert main.main([*common, "--run-name", "serial"]) == 0
    assert main.main([*common, "--run-name", "pool", "--launcher", "local", "--max-parallel", "2"]) == 0
    experiment = tmp_path / args[0] / (args[1] if not args[1].startswith("-") else "main_table")
    serial = {p.relative_to(experiment / "serial"): p for p in (experiment / "serial").rglob("result.json")}
    pool = {p.relative_to(experiment / "pool"): p for p in (experiment / "pool").rglob("result.json")}
    assert serial.keys() == pool.keys() and len(serial) > 1
    for name in serial:
        assert json.loads(pool[name].read_text())["values"] == json.loads(serial[name].read_text())["values"], name


def test_data_parallel_cells_run_by_two_gloo_ranks_give_the_serial_table(toy, capsys):
    assert main.main(["toy", "--output", str(toy), "--run-name", "one"]) == 0
    two_ranks = ["--run-name", "two", "--nproc-per-node", "2", "--backend", "gloo"]
    assert main.main(["toy", "--output", str(toy), *two_ranks]) == 0
    two = toy / "toy/table1/two"
    assert _rows(two) == _rows(toy / "toy/table1/one")
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    results = [json.loads(path.read_text()) for path in two.rglob("result.json")]
    assert len(results) == 6, "each cell's result is written once, by rank 0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["memae", "--nproc-per-node", "2"], "memae/image_table, memae/conditional trains many small models"),
        (["toy", "--nproc-per-node", "2", "--launcher", "local"], "--nproc-per-node goes with the serial launcher"),
        (["mchad", "--nproc-per-node", "3"], "mchad/main_table: train.batch_size 32 is the global batch, split over"),
        (["invglow", "--nproc-per-node", "3"], "invglow/tables: pretrain.batch_size 32 is the global batch"),
        (["toy", "--nproc-per-node", "2", "--backend", "nccl"], "--nproc-per-node 2 --backend nccl: "),
    ],
)
def test_data_parallel_is_refused_where_it_does_not_apply(toy, monkeypatch, capsys, args, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # nccl needs GPUs
    assert main.main([*args, "--output", str(toy)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not toy.exists()
