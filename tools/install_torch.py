"""Install torch into this interpreter's environment (`make setup`): ``install_torch.py SPEC [--cpu-index URL]``.

Without ``--cpu-index``: ``pip install SPEC`` from the indexes pip is set up with (PyPI: the CUDA build on Linux).

With ``--cpu-index URL``: the CPU build. PyPI's Linux wheels of torch are CUDA builds, gigabytes larger; PyTorch's CPU
index has the same versions as ``+cpu`` wheels, which pip prefers when both match (``2.13.0+cpu`` sorts after
``2.13.0``). The index is asked first, once, with a short timeout: a machine that cannot reach it (an offline mirror
that serves its own CPU wheel) installs SPEC without it, after one line saying so, instead of pip looking it up
for every package, silently, for up to minutes.

torch is reinstalled even when one is there: the one there may match SPEC and be the other build.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request

PROBE_TIMEOUT_S = 5.0


def answers(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when ``url`` answers (2xx) within ``timeout`` seconds, else the reason it did not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except Exception as error:  # no name resolution, refused, timed out, TLS, HTTP error: all mean "not usable"
        return str(getattr(error, "reason", error))


def pip_command(spec: str, cpu_index: str | None) -> list[str]:
    """The pip command that installs ``spec``, with ``cpu_index`` as an extra index when given."""
    extra = ["--extra-index-url", cpu_index] if cpu_index else []
    return [sys.executable, "-m", "pip", "install", "--force-reinstall", *extra, spec]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="the torch requirement, e.g. 'torch==2.13.0' or 'torch>=2.2,<3'")
    parser.add_argument("--cpu-index", metavar="URL", help="PyTorch's CPU wheel index, used if it answers")
    args = parser.parse_args(argv)
    index = args.cpu_index
    if index:
        reason = answers(index)
        if reason is None:
            print(f"torch: the CPU build, {args.spec}, with {index}", flush=True)
        else:
            print(
                f"torch: {index} did not answer ({reason}); installing {args.spec} from the indexes pip is set up "
                "with (an offline mirror's CPU wheel, or on Linux PyPI's CUDA build)",
                flush=True,
            )
            index = None
    else:
        print(f"torch: {args.spec} from the indexes pip is set up with", flush=True)
    command = pip_command(args.spec, index)
    print(" ".join(command), flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
