"""Run a small job at every site of the development facility and show where it ran.

Each job reports the site it landed on, its network address, and which XRootD server served its
read of the dataset (the site's nearest cache). Run it after `remote-jobqueue facility up`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from remote_jobqueue import schedd as sched
from remote_jobqueue.data import cache_environment, write_proxy_plugin_conf
from remote_jobqueue.spec import condor_environment
from rjq_facility import dataset, lifecycle
from rjq_facility.config import FacilityConfig

JOB = """\
import json, os, socket, runpy, sys, io, contextlib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((os.environ["RJQ_HUB"], 9))
buf = io.StringIO()
sys.argv = ["probe", "probe", os.environ["RJQ_LFN"]]
with contextlib.redirect_stdout(buf):
    try:
        runpy.run_module("remote_jobqueue.data", run_name="__main__")
    except SystemExit:
        pass
probe = json.loads(buf.getvalue().strip().splitlines()[-1])
print(json.dumps({"site": os.environ["RJQ_SITE"], "address": s.getsockname()[0], **probe}))
"""


def main() -> int:
    cfg = FacilityConfig()
    env = lifecycle.env(cfg, "alice")
    os.environ.update(env)
    sched.use_config(env["CONDOR_CONFIG"])
    plugin_dir = write_proxy_plugin_conf(cfg.state_dir / "xrootd" / "client-plugins")
    schedd = sched.locate(cfg.collector, f"hub@{cfg.uid_domain}")
    console = Console(width=max(Console().width, 110))
    jobs: dict[str, tuple[int, Path]] = {}
    started = time.monotonic()
    for site in cfg.sites:
        workdir = Path(tempfile.mkdtemp(prefix=f"hello-{site.name}-"))
        (workdir / "job.py").write_text(JOB)
        env = {
            **cache_environment(cfg.cache_url_for(site.name), plugin_dir),
            "RJQ_XROOTD_ORIGIN": cfg.origin_url,
            "RJQ_HUB": cfg.hub_address,
            "RJQ_LFN": dataset.DATASET_LFNS[0],
        }
        description = {
            "executable": sys.executable,
            "transfer_executable": "false",
            "arguments": "job.py",
            "transfer_input_files": "job.py",
            "initialdir": str(workdir),
            "output": "out.txt",
            "error": "err.txt",
            "requirements": f'TARGET.SiteName == "{site.name}"',
            "environment": condor_environment({**env, "RJQ_SITE": "$$(SiteName)"}),
            "request_cpus": "1",
            "request_memory": "512",
        }
        jobs[site.name] = (sched.submit(schedd, description), workdir)
        console.print(f"submitted a job to [bold]{site.name}[/]")
    table = Table(title="One job per site of the development facility")
    for column in ("site", "ran at address", "read served by", "events read", "done after"):
        table.add_column(column)
    for site_name, (cluster, workdir) in jobs.items():
        sched.wait_for_status(schedd, cluster, {sched.JobStatus.COMPLETED}, timeout=300)
        schedd.retrieve(f"ClusterId == {cluster}")
        sched.remove(schedd, f"ClusterId == {cluster}")
        out = json.loads((workdir / "out.txt").read_text().strip().splitlines()[-1])
        assert out["site"] == site_name, out
        table.add_row(
            out["site"],
            out["address"],
            out.get("data_server", out.get("error", "?")),
            str(out.get("events", "-")),
            f"{time.monotonic() - started:.1f} s",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
