"""A user's JupyterLab, in a real browser (Debian's chromium, headless, driven by playwright-core).

Specification: in the Dask panel, "Create new cluster" offers the catalogue's sites ("HTCondor
(random site)", each site by its label, "Local"); picking `T2_A` creates a cluster that the
panel lists; scaling it to 2 shows 2 workers; closing it removes it from the panel and leaves no
job at the site. The suite keeps the screenshots (tests/browser/screenshots/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from remote_jobqueue.clusters import list_clusters

from .helpers import panel_server

BROWSER = Path(__file__).parents[1] / "browser"
SHOTS = BROWSER / "screenshots"

pytestmark = pytest.mark.timeout(600)


def test_a_user_creates_scales_and_closes_a_cluster_at_t2_a_from_the_dask_panel(
    facility, alice, tmp_path
):
    assert (BROWSER / "node_modules" / "playwright-core").is_dir(), "run scripts/setup.sh"
    SHOTS.mkdir(exist_ok=True)
    before = {info.cluster_id for info in list_clusters()}
    with panel_server(facility, "alice", tmp_path) as lab:
        walk = subprocess.run(
            [shutil.which("node") or "node", str(BROWSER / "dask_panel.mjs")],
            env={
                **os.environ,
                "LAB_URL": lab.url,
                "LAB_TOKEN": lab.token,
                "RJQ_SITE": "T2_A",
                "SCREENSHOT_DIR": str(SHOTS),
            },
            capture_output=True,
            text=True,
            timeout=540,
        )
        steps = {}
        for line in walk.stdout.splitlines():
            entry = json.loads(line)
            steps[entry.pop("step")] = entry
        assert walk.returncode == 0, (steps.get("failed"), walk.stderr[-2000:])
        lab_log = lab.log.read_text()
    assert steps["create dialog"]["options"][0].startswith("HTCondor (random site)")
    assert any(option.startswith("HTCondor-T2_A") for option in steps["create dialog"]["options"])
    assert steps["create dialog"]["options"][-1] == "Local"
    assert steps["cluster listed"]["title"].startswith("HTCondor-T2_A (rjq-")
    assert "Number of Workers: 2" in steps["workers appeared"]["stats"]
    assert "cluster closed" in steps
    assert (SHOTS / "dask-panel-workers.png").read_bytes()[:4] == b"\x89PNG"
    assert lab.token not in lab_log, "the server's token is in no log line"
    assert {info.cluster_id for info in list_clusters()} == before, "no job left at the site"
