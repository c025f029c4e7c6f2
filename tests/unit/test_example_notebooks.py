"""The example notebooks are committed clean, and parameterised the way the suite runs them.

Specification: each notebook in examples/ is valid nbformat v4, carries no outputs, execution
counts or widget state (a run's leftovers, which would show stale results and bloat diffs), runs
on the ``python3`` kernel, and has a cell tagged ``parameters`` that takes the site from
``RJQ_EXAMPLE_SITE`` (how tests/integration/test_notebooks.py points it at a site).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def test_the_examples_include_the_tour_and_the_dimuon_analysis():
    assert {path.name for path in NOTEBOOKS} >= {"tour.ipynb", "dimuon.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_notebook_is_valid_nbformat_v4(path):
    nb = read(path)
    assert nb.nbformat == 4
    nbformat.validate(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_notebook_is_committed_without_outputs_counts_or_widget_state(path):
    nb = read(path)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert [cell.outputs for cell in code if cell.outputs] == []
    assert [cell.execution_count for cell in code if cell.execution_count is not None] == []
    assert "widgets" not in nb.metadata
    assert not any("execution" in cell.metadata for cell in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_a_notebook_runs_on_the_python3_kernel(path):
    assert read(path).metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_the_first_code_cell_is_tagged_parameters_and_takes_the_site_from_the_environment(path):
    code = [cell for cell in read(path).cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == code[:1]
    assert 'SITE = os.environ.get("RJQ_EXAMPLE_SITE", "T2_A")' in tagged[0].source
