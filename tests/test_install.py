"""Installing the suite: the Makefile's choice of torch build and its stamps, tools/install_torch.py, `ood-repro`.

The Makefile is run for real against a fake interpreter (a script that logs its arguments) in a temporary venv
folder, and with a fake ``nvidia-smi`` first on PATH: what it would install, and when, is checked without
installing anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import site
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import folder_locations
import main
from tests.helpers.http_server import FileServer

REPOSITORY = folder_locations.REPOSITORY
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture()
def fake_machine(tmp_path):
    """run(*make_args, gpu=bool) runs `make` in the repository on a fake venv; returns (stdout, logged calls)."""
    venv, bin_dir = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    python.chmod(0o755)

    def run(*make_args: str, gpu: bool) -> tuple[str, list[str]]:
        smi = bin_dir / "nvidia-smi"  # lists a GPU, or fails as it does on a machine without a driver
        smi.write_text('#!/bin/sh\necho "GPU 0: Fake GPU (UUID: GPU-0)"\n' if gpu else "#!/bin/sh\nexit 9\n")
        smi.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "TORCH_"))}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        log.unlink(missing_ok=True)
        done = subprocess.run(
            ["make", "-C", str(REPOSITORY), "--no-print-directory", f"VENV={venv}", *make_args],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout, log.read_text().splitlines() if log.exists() else []

    return run


def _torch_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if "install_torch.py" in line]
    assert len(lines) == 1, stdout
    return lines[0]


@needs_make
def test_without_a_gpu_make_installs_the_pinned_cpu_build_with_the_cpu_index(fake_machine):
    stdout, _ = fake_machine("-n", "setup", gpu=False)
    assert _torch_line(stdout).endswith(f'install_torch.py "torch==2.13.0" --cpu-index {CPU_INDEX}')
    assert "the cpu build" in stdout


@needs_make
def test_with_a_gpu_make_installs_the_requirements_range_from_pypi(fake_machine):
    stdout, _ = fake_machine("-n", "setup", gpu=True)
    assert _torch_line(stdout).rstrip().endswith('install_torch.py "torch>=2.2,<3"')
    assert "the cuda build" in stdout
    requirements = (REPOSITORY / "requirements.txt").read_text().splitlines()
    assert "torch>=2.2,<3" in requirements  # the range users need, and the CUDA spec


@needs_make
def test_torch_spec_and_torch_build_override_the_detection(fake_machine):
    stdout, _ = fake_machine("-n", "setup", "TORCH_SPEC=torch==2.5.1", gpu=False)
    assert _torch_line(stdout).endswith(f'"torch==2.5.1" --cpu-index {CPU_INDEX}')
    stdout, _ = fake_machine("-n", "setup", "TORCH_BUILD=cpu", gpu=True)
    assert _torch_line(stdout).endswith(f'"torch==2.13.0" --cpu-index {CPU_INDEX}')
    stdout, _ = fake_machine("-n", "setup", "TORCH_BUILD=cuda", "TORCH_SPEC=torch==2.5.1", gpu=False)
    assert _torch_line(stdout).rstrip().endswith('"torch==2.5.1"')


@needs_make
def test_a_changed_torch_spec_reinstalls_torch_and_nothing_else_does(fake_machine):
    _, calls = fake_machine("setup", gpu=False)  # a fresh venv: torch, then the requirements, then the suite
    assert [call.split()[0] for call in calls] == ["tools/install_torch.py", "-m", "-m"]
    assert calls[0] == f"tools/install_torch.py torch==2.13.0 --cpu-index {CPU_INDEX}"
    assert calls[1:] == ["-m pip install -r requirements.txt -r requirements-dev.txt", "-m pip install --no-deps -e ."]
    stdout, _ = fake_machine("-n", "setup", gpu=False)
    assert "Nothing to be done" in stdout

    stdout, _ = fake_machine("-n", "-W", "requirements.txt", "setup", gpu=False)  # as if requirements.txt changed
    assert "pip install -r requirements.txt" in stdout and "install_torch.py" not in stdout

    _, calls = fake_machine("setup", "TORCH_SPEC=torch==2.5.1", gpu=False)
    assert calls[0] == f"tools/install_torch.py torch==2.5.1 --cpu-index {CPU_INDEX}" and len(calls) == 3
    _, calls = fake_machine("setup", gpu=True)  # the GPU appeared: the CUDA build
    assert calls[0] == "tools/install_torch.py torch>=2.2,<3" and len(calls) == 3
    _, calls = fake_machine("setup", gpu=True)
    assert calls == []


def _install_torch_module():
    spec = importlib.util.spec_from_file_location("install_torch", REPOSITORY / "tools" / "install_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_index_is_probed_once_and_a_failure_says_why(tmp_path):
    install_torch = _install_torch_module()
    (tmp_path / "served" / "cpu").mkdir(parents=True)
    (tmp_path / "served" / "cpu" / "index.html").write_text("<html></html>")
    with FileServer(tmp_path / "served") as server:
        assert install_torch.answers(server.url("cpu/index.html")) is None
        assert "Not Found" in install_torch.answers(server.url("missing/"))
        server.stall = True  # a firewall that drops the packets: the probe gives up, pip never waits on it
        assert "timed out" in install_torch.answers(server.url("cpu/index.html"), timeout=0.2)
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "refused" in install_torch.answers(f"http://127.0.0.1:{port}/whl/cpu").lower()


@pytest.mark.parametrize("reachable", [True, False])
def test_install_torch_uses_the_cpu_index_only_when_it_answers(monkeypatch, capsys, reachable):
    install_torch = _install_torch_module()
    monkeypatch.setattr(install_torch, "answers", lambda url: None if reachable else "Name or service not known")
    commands = []
    monkeypatch.setattr(install_torch.subprocess, "call", lambda command: commands.append(command) or 0)
    assert install_torch.main(["torch==2.13.0", "--cpu-index", CPU_INDEX]) == 0
    pip = [sys.executable, "-m", "pip", "install", "--force-reinstall"]
    extra = ["--extra-index-url", CPU_INDEX] if reachable else []
    assert commands == [[*pip, *extra, "torch==2.13.0"]]
    out = capsys.readouterr().out
    assert ("did not answer (Name or service not known)" in out) is not reachable


def test_pyproject_declares_ood_repro_as_main_main():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    module, function = project["scripts"]["ood-repro"].split(":")
    assert getattr(importlib.import_module(module), function) is main.main


def _installed_script() -> Path:
    try:
        (entry,) = importlib.metadata.entry_points(group="console_scripts", name="ood-repro")
    except ValueError:
        pytest.skip("ood-repro is not installed in this environment (`pip install -e .` or `make setup`)")
    assert entry.load() is main.main
    script = Path(sys.executable).parent / "ood-repro"
    if not script.exists():
        pytest.skip(f"no {script}")
    return script


def test_the_installed_ood_repro_is_python_main_py(monkeypatch, capsys):
    script = _installed_script()
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run([script, "--help"], env=env, capture_output=True, text=True, timeout=300)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr(sys, "argv", ["ood-repro"])
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--help"])
    assert exit_info.value.code == 0 and done.returncode == 0
    assert done.stdout == capsys.readouterr().out and done.stdout.startswith("usage: ood-repro")
    done = subprocess.run([script, "download", "no-such-dataset"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "unknown dataset(s) no-such-dataset" in done.stderr  # main()'s exit code


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_gives_a_working_ood_repro(tmp_path):
    """The wheel (not the editable install) holds every module `ood-repro` needs; run outside the repository.

    The fresh venv borrows this environment's dependencies through a .pth line instead of installing torch again.
    """
    source = tmp_path / "source"
    shutil.copytree(
        REPOSITORY, source,
        ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".*_cache"),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source],
        check=True, capture_output=True,
    )  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (wheel,) = (tmp_path / "dist").glob("ood_repro-*.whl")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], check=True, capture_output=True)

    done = subprocess.run([venv / "bin" / "ood-repro", "list"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(f"  {paper}: " in done.stdout for paper in main.PAPER_MODULES)
    where = subprocess.run(
        [python, "-c", "import main; print(main.__file__)"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv)
