"""The README stays in step with the code: every dataset is listed, the set-up commands are there, its Python runs."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import main
from common.datasets import DATASETS
from common.results import ResultRow

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_registered_dataset_is_in_the_readme():
    missing = [name for name in DATASETS if f"`{name}`" not in README]
    assert not missing, f"README.md does not list {missing}"


def test_readme_shows_the_two_set_up_commands():
    assert "make demo" in README and "make test" in README


# Python in the READMEs: fenced ```python blocks and inline `import ...` lines are run; inline calls of the suite's
# functions (`common.metrics.ood_metrics(scores, is_ood)`) must name a function that takes those arguments.
REPOSITORY = Path(__file__).resolve().parents[1]
SUITE_MODULES = ("main", "common", *main.PAPER_MODULES)
READMES = {
    path.relative_to(REPOSITORY).as_posix(): path.read_text()
    for path in [REPOSITORY / "README.md", *(REPOSITORY / name / "README.md" for name in SUITE_MODULES[1:])]
    if path.is_file()
}
_FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`\n]+)`")
_SUITE_CALL = re.compile(rf"^(?:{'|'.join(SUITE_MODULES)})(?:\.\w+)+\(")


def python_snippets(text: str) -> list[str]:
    """The fenced ```python blocks and the inline spans that start with ``import`` or ``from``, in order."""
    fenced = [body for language, body in _FENCED.findall(text) if language == "python"]
    inline = [span for span in _INLINE.findall(_FENCED.sub("", text)) if span.startswith(("import ", "from "))]
    return fenced + inline


def suite_calls(text: str) -> list[str]:
    """Inline spans that are one call of a function of the suite, e.g. `common.datasets.load(name, split)`."""
    return [span for span in _INLINE.findall(_FENCED.sub("", text)) if _SUITE_CALL.match(span)]


def run_snippet(code: str) -> object:
    """Run ``code`` as a user would paste it; the value of its last line when that is an expression."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace: dict[str, object] = {}
    exec(compile(tree, "<README>", "exec"), namespace)
    return eval(compile(ast.Expression(last.value), "<README>", "eval"), namespace) if last else None


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError as error:
            if error.name != ".".join(parts[:split]):
                raise
            continue
        for name in parts[split:]:
            found = getattr(found, name)
        return found
    raise AssertionError(f"{dotted}: no such module")


SNIPPETS = [(readme, snippet) for readme, text in READMES.items() for snippet in python_snippets(text)]
CALLS = [(readme, call) for readme, text in READMES.items() for call in suite_calls(text)]


def test_the_readme_has_python_snippets_and_calls():
    assert any(readme == "README.md" for readme, _ in SNIPPETS) and any(readme == "README.md" for readme, _ in CALLS)


@pytest.mark.parametrize(("readme", "snippet"), SNIPPETS, ids=[f"{r}: {s}" for r, s in SNIPPETS])
def test_python_snippets_run_up_to_training(readme, snippet, monkeypatch):
    """Each snippet runs as written; a paper's run resolves and checks the experiments and every option
    (:func:`main.prepare`) and stops there: ``main.run_job`` is the one thing replaced."""
    jobs = []
    monkeypatch.setattr(main, "run_job", lambda job, options: jobs.append(job) or [])
    run_snippet(snippet)
    assert all(any(job.selections) for job in jobs), f"{readme}: `{snippet}` selects no cell to run"


@pytest.mark.parametrize(("readme", "call"), CALLS, ids=[f"{r}: {c}" for r, c in CALLS])
def test_inline_calls_name_a_function_that_takes_those_arguments(readme, call):
    node = ast.parse(call, mode="eval").body
    assert isinstance(node, ast.Call), f"{readme}: `{call}` is not one call"
    function = _resolve(ast.unparse(node.func))
    keywords = {keyword.arg: None for keyword in node.keywords}
    inspect.signature(function).bind(*(None for _ in node.args), **keywords)  # TypeError names the mismatch


@pytest.mark.slow
def test_python_snippets_of_the_main_readme_run_for_real(tmp_path, monkeypatch):
    """The README's own lines, trained for real at the demo scale (minutes), each giving a table."""
    monkeypatch.setenv("OOD_REPRO_RUNS", str(tmp_path / "runs"))
    for snippet in python_snippets(READMES["README.md"]):
        rows = run_snippet(snippet)
        if "main." in snippet:
            assert rows and all(isinstance(row, ResultRow) for row in rows), snippet
