"""A detached run's driver at the site, as local processes.

Specification: the script runs in a directory of its own as a Dask client of the cluster (the
scheduler's address and TLS pair in its environment, no credential of the bundle's); its output
is read from any offset; a file is handed back only from its own directory; past its wall time
it is killed and says so.
"""

from __future__ import annotations

import sys

import pytest

from remote_jobqueue.bundle.driver import Driver


def _driver(tmp_path, code: str, **spec) -> Driver:
    (tmp_path / "tls-cert.pem").write_text("CERT")
    (tmp_path / "tls-key.pem").write_text("KEY")
    (tmp_path / "script.py").write_text(code)
    return Driver(tmp_path, sys.executable, {"script": "script.py", **spec})


async def test_the_script_is_a_client_of_the_cluster_and_its_output_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("BEARER_TOKEN", "a-secret-the-script-must-not-see")
    code = (
        "import os, sys\n"
        "print(os.environ['DASK_SCHEDULER_ADDRESS'], sys.argv[1:])\n"
        "print(os.environ['DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY'].endswith('tls-key.pem'))\n"
        "print('BEARER_TOKEN' in os.environ)\n"
        "open('out.txt', 'w').write('result')\n"
    )
    driver = _driver(tmp_path, code, args=["--files", "4"])
    await driver.start("tls://10.0.0.1:8786")
    assert await driver.wait() == 0
    assert driver.status() == {
        "state": "done",
        "returncode": 0,
        "why": "the script exited with status 0",
    }
    text = driver.read_log()["text"]
    assert text.splitlines() == ["tls://10.0.0.1:8786 ['--files', '4']", "True", "False"]
    assert driver.read_log(offset=len(text))["text"] == ""
    assert driver.read_file("out.txt") == b"result"


async def test_files_outside_the_runs_directory_are_refused(tmp_path):
    driver = _driver(tmp_path, "pass\n")
    await driver.start("tls://s:1")
    await driver.wait()
    with pytest.raises(PermissionError, match="not in the run's directory"):
        driver.read_file("../tls-key.pem")
    (driver.dir / "link").symlink_to(tmp_path / "tls-key.pem")
    with pytest.raises(PermissionError):
        driver.read_file("link")
    with pytest.raises(FileNotFoundError, match=r"no file missing\.txt"):
        driver.read_file("missing.txt")


async def test_a_script_past_its_wall_time_is_stopped_and_says_so(tmp_path):
    driver = _driver(tmp_path, "import time; time.sleep(60)\n", wall_time=1)
    await driver.start("tls://s:1")
    assert await driver.wait() != 0
    assert driver.status()["why"] == "the script ran past its wall time (1 s)"
