"""The example notebooks run unchanged on the facility, as alice would run them in JupyterLab.

Specification: each notebook, executed top to bottom by nbclient on this environment's
``python3`` kernel, in a working directory of its own, with alice's client settings and
``RJQ_EXAMPLE_SITE=T2_A`` (the kernel inherits them, as a user's kernel inherits her server's):
1. tour.ipynb starts a cluster at T2_A, shows it as the live widget, computes, adapts, and
   leaves no job of the cluster once it has closed it;
2. dimuon.ipynb reads every event of the dataset on a cluster at T2_A, its histogram's total is
   the one a local process counts, and it saves the plot as dimuon.png in the working directory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from remote_jobqueue.analysis import files, with_uproot
from rjq_facility import dataset, xrootd

from ..waiting import wait_until
from .helpers import jobs_of, user_env

pytestmark = pytest.mark.timeout(600)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: ipykernel's own kernelspec; its ``python`` is the interpreter running the suite.
KERNEL = "python3"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute(facility, name: str, workdir: Path) -> nbformat.NotebookNode:
    """The notebook ``name`` of examples/, executed in ``workdir`` as alice, at T2_A."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    env = {**user_env(facility, "alice"), "RJQ_EXAMPLE_SITE": "T2_A"}
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=420, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env=env, cwd=str(workdir))
    return nb


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed."""
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def displayed(nb: nbformat.NotebookNode, cell_id: str) -> set[str]:
    """The MIME types the cell ``cell_id`` displayed."""
    (cell,) = (cell for cell in nb.cells if cell.get("id") == cell_id)
    return {mime for output in cell.outputs for mime in output.get("data", {})}


def cluster_id(text: str) -> str:
    found = re.search(r"^cluster id (rjq-[0-9a-f]+),", text, re.MULTILINE)
    assert found, text
    return found.group(1)


def test_the_python3_kernel_is_the_interpreter_running_the_suite():
    command = KernelManager(kernel_name=KERNEL).format_kernel_cmd()
    assert command[0] == sys.executable


def test_the_tour_runs_a_cluster_at_T2_A_and_leaves_nothing(facility, tmp_path):
    nb = execute(facility, "tour.ipynb", tmp_path)
    text = printed(nb)
    assert "cluster at T2_A\n" in text
    assert WIDGET_VIEW in displayed(nb, "create"), "the cluster shows as the live widget"
    assert "sum of squares: 328350\n" in text
    assert "adapting between 0 and 3 workers\n" in text
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/status$", text, re.MULTILINE), text
    assert re.search(r"^logs: .*\bBundle\b", text, re.MULTILINE), text
    assert "cluster closed\n" in text
    ident = cluster_id(text)
    wait_until(lambda: not jobs_of(facility, ident), 60, "no job of the tour's cluster left")


def test_the_dimuon_notebook_counts_the_whole_dataset_at_T2_A_and_saves_the_plot(
    facility, alice, tmp_path
):
    nb = execute(facility, "dimuon.ipynb", tmp_path)
    text = printed(nb)
    assert "cluster at T2_A\n" in text
    manifest = dataset.read_manifest(xrootd.origin_data_dir(facility))
    events = sum(entry["events"] for entry in manifest["files"])
    assert f" {events:,} events processed" in text
    found = re.search(r"^histogram total: (\d+) entries$", text, re.MULTILINE)
    assert found, text
    reference = with_uproot.run(files.urls())  # one local process, as alice
    assert int(found.group(1)) == int(reference.counts.sum()) > 0
    assert (tmp_path / "dimuon.png").stat().st_size > 0
    assert "image/png" in displayed(nb, "plot")
    wait_until(lambda: not jobs_of(facility, cluster_id(text)), 60, "no job of its cluster left")
