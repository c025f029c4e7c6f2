"""Token-protected reads (`facility data --tokens`): the storage reads only for a valid token.

Specification:
- with alice's token, a read at T2_A through the cache hierarchy (T2_A's cache, the hub's
  regional cache, the origin) succeeds and reports T2_A's cache as the server; each cache read
  upstream with its own service token, so the origin never saw alice's;
- a notebook-side read through the hub's cache and a direct read of the origin succeed too;
- without a token, with an expired one, one without ``storage.read``, one for another
  audience, or one signed by another key (a foreign issuer's), the read is refused, and the
  error says which of these it was;
- on a cluster at T2_A, the workers read with the token they were given (the dimuon counts
  every event), and a worker whose token has expired gets the explanation, not XRootD's words
  alone; when the client renews its token, the workers' copies follow; no token appears in
  any job ad.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import cloudpickle
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from dask.distributed import Client

from remote_jobqueue import RemoteHTCondorCluster
from remote_jobqueue import schedd as sched
from remote_jobqueue.analysis import with_uproot
from remote_jobqueue.data import cache_environment, to_url, write_proxy_plugin_conf
from remote_jobqueue.storage_auth import write_ca_dir
from remote_jobqueue.tokens import token_claims_unverified, write_token_file
from rjq_facility import data_paths, dataset, issuer, lifecycle, scitokens, storage_tokens, xrootd
from rjq_facility.config import FacilityConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def protected(facility: FacilityConfig) -> Iterator[FacilityConfig]:
    """The facility with token-protected reads and the cache hierarchy; put back afterwards."""
    before = asdict(data_paths.load(facility))
    lifecycle.set_data_paths(
        facility, log=lambda *_: None, tokens=True, topology="hierarchical", lazy=()
    )
    yield facility
    lifecycle.set_data_paths(facility, log=lambda *_: None, **before)


@pytest.fixture
def fresh_lfn(protected: FacilityConfig) -> Iterator[str]:
    """A dataset file under a name no cache has seen (a hard link at the origin)."""
    data = xrootd.origin_data_dir(protected)
    name = f"test-tokens-{os.urandom(4).hex()}"
    source = dataset.DATASET_LFNS[0]
    lfn = f"/store/{name}/{Path(source).name}"
    (data / lfn.lstrip("/")).parent.mkdir(parents=True)
    os.link(data / source.lstrip("/"), data / lfn.lstrip("/"))
    yield lfn
    for server in xrootd.servers(protected):
        for path in server.data_dir.rglob(name):
            subprocess.run(["rm", "-rf", str(path)], check=False)


def user_token(cfg: FacilityConfig, tmp_path: Path, **grant) -> Path:
    """A token file (0600) of alice's, from the facility's issuer."""
    grant.setdefault("audience", lifecycle.user_audiences())
    response = issuer.password_grant(cfg, "alice", **grant)
    path = tmp_path / f"token-{os.urandom(3).hex()}"
    write_token_file(path, response["access_token"])
    return path


def foreign_token(cfg: FacilityConfig, tmp_path: Path) -> Path:
    """A token with alice's claims and the facility issuer's name, signed by another key."""
    real = token_claims_unverified(user_token(cfg, tmp_path).read_text())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(real, key, algorithm="RS256", headers={"kid": "not-the-issuers"})
    path = tmp_path / "foreign-token"
    write_token_file(path, forged)
    return path


def read(
    cfg: FacilityConfig,
    lfn: str,
    cache: str | None,
    token: Path | None,
    tmp_path: Path,
    *,
    netns: str | None = None,
) -> dict:
    """`python -m remote_jobqueue.data probe` with only the given XRootD and token settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XRD_", "XROOT_", "BEARER_TOKEN", "X509_"))}  # fmt: skip
    env |= {"XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "5", "XRD_REQUESTTIMEOUT": "30"}
    ca = scitokens.ca_file(cfg).read_text()
    env["X509_CERT_DIR"] = str(write_ca_dir(ca, tmp_path / "ca"))
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "no-runtime-dir")  # no token found by accident
    if token is not None:
        env["BEARER_TOKEN_FILE"] = str(token)
    if cache:
        env |= cache_environment(cache, write_proxy_plugin_conf(tmp_path / "plugins"))
    prefix = ["ip", "netns", "exec", netns] if netns else []
    argv = [sys.executable, "-m", "remote_jobqueue.data", "probe", to_url(lfn, cfg.origin_url)]
    proc = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout)


def at_t2a(cfg: FacilityConfig, lfn: str, token: Path | None, tmp_path: Path) -> dict:
    chain = data_paths.cache_for(cfg, "T2_A", "hierarchical")
    return read(cfg, lfn, chain, token, tmp_path, netns=cfg.site("T2_A").netns)


def test_a_valid_token_reads_through_the_hierarchy_and_the_origin_sees_only_caches(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    origin_log = protected.logs / "xrootd-origin.log"
    seen = origin_log.stat().st_size
    result = at_t2a(protected, fresh_lfn, user_token(protected, tmp_path), tmp_path)
    assert result.get("data_server") == protected.cache_url_for("T2_A"), result
    assert result["events"] > 0
    # Each cache fetched upstream as itself: the origin logged the hub cache's service
    # identity for this read, and nothing of alice's.
    with origin_log.open("rb") as log:
        log.seek(seen)
        said = log.read().decode(errors="replace")
    assert "service:cache-hub" in said, said[-2000:]
    sub = issuer.Issuer(protected.state_dir, protected.issuer_url).users["alice"]["sub"]
    assert sub not in said and "alice" not in said


def test_the_notebook_side_and_a_direct_read_take_the_token_too(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    token = user_token(protected, tmp_path)
    hub = read(protected, fresh_lfn, protected.hub_cache_url, token, tmp_path)
    assert hub.get("data_server") == protected.hub_cache_url, hub
    direct = read(protected, fresh_lfn, None, token, tmp_path)
    assert direct.get("data_server") == protected.origin_url, direct


def refusal(result: dict) -> str:
    assert "data_server" not in result, f"the read was not refused: {result}"
    assert result["error"].startswith("StorageAccessDenied: the storage refused to read")
    return result["error"]


def test_a_read_without_a_token_is_refused_and_says_so(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    assert "no bearer token was found" in refusal(at_t2a(protected, fresh_lfn, None, tmp_path))


def test_an_expired_token_is_refused_and_the_error_says_it_expired(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    token = user_token(protected, tmp_path, expires_in=1)
    time.sleep(2)
    message = refusal(at_t2a(protected, fresh_lfn, token, tmp_path))
    assert "expired" in message and str(token) in message
    assert token.read_text() not in message


def test_a_token_without_storage_read_is_refused_and_the_error_names_its_scopes(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    token = user_token(protected, tmp_path, scope="openid compute.create")
    message = refusal(at_t2a(protected, fresh_lfn, token, tmp_path))
    assert "no storage.read scope" in message and "compute.create" in message


def test_a_token_for_another_audience_is_refused_and_the_error_names_it(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    token = user_token(protected, tmp_path, audience=["remote-jobqueue-pool"])
    message = refusal(at_t2a(protected, fresh_lfn, token, tmp_path))
    assert "audience remote-jobqueue-pool" in message
    assert token_claims_unverified(token.read_text())["aud"] == "remote-jobqueue-pool"
    assert storage_tokens.STORAGE_AUDIENCE not in message


def test_a_token_signed_by_another_key_is_refused(
    protected: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    message = refusal(at_t2a(protected, fresh_lfn, foreign_token(protected, tmp_path), tmp_path))
    assert "may not trust its issuer" in message


def expired_read_in_subprocess(url: str) -> str:
    """On a worker: read ``url`` in a fresh process whose token expired a minute ago (made
    right here: no token travels in the task), and return what the process said."""
    import subprocess
    import sys
    import tempfile
    import time

    import jwt

    from remote_jobqueue.tokens import write_token_file

    now = int(time.time())
    claims = {"iss": "https://expired.test", "sub": "x", "iat": now - 120, "exp": now - 60,
              "scope": "storage.read:/", "aud": "remote-jobqueue-storage"}  # fmt: skip
    directory = tempfile.mkdtemp()
    write_token_file(f"{directory}/bt", jwt.encode(claims, "k" * 32, algorithm="HS256"))
    code = "import sys; from remote_jobqueue.analysis import with_uproot as w; " + (
        "w.process_file(sys.argv[1])"
    )
    env = {**__import__("os").environ, "BEARER_TOKEN_FILE": f"{directory}/bt"}
    proc = subprocess.run(
        [sys.executable, "-c", code, url], env=env, capture_output=True, text=True, timeout=120
    )
    return proc.stderr


def ask_for_tokens_often(dask_worker) -> None:
    """On a worker: ask the scheduler for a newer token every 0.2 s instead of every minute."""
    from remote_jobqueue.data import TOKEN_FOLLOW_CALLBACK

    callback = dask_worker.periodic_callbacks[TOKEN_FOLLOW_CALLBACK]
    callback.stop()
    callback.callback_time = 200
    callback.start()


def token_file_digest() -> str:
    """On a worker: the SHA-256 of its token file (the token itself never comes back)."""
    import hashlib
    import os
    from pathlib import Path

    return hashlib.sha256(Path(os.environ["BEARER_TOKEN_FILE"]).read_bytes()).hexdigest()


def test_workers_at_T2_A_read_with_their_token_and_an_expired_one_is_explained_there(
    protected: FacilityConfig, alice: dict, fresh_lfn: str
) -> None:
    url = to_url(fresh_lfn, protected.origin_url)
    spooled = Path(alice["BEARER_TOKEN_FILE"]).read_text()  # the token the jobs get
    cluster = RemoteHTCondorCluster(
        site="T2_A", cores=1, n_workers=1, resident_worker=False, quiet=True
    )
    with cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=180)
        result = with_uproot.run([url], client)
        # Workers cannot import this test module: send the functions themselves.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        try:
            (said,) = client.run(expired_read_in_subprocess, url).values()
            # The client renews alice's token; the bundle takes it, and the worker's copy
            # follows (the worker asks every 60 s; this one is told to ask every 0.2 s).
            client.run(ask_for_tokens_often)
            renewed = issuer.password_grant(
                protected, "alice", audience=lifecycle.user_audiences()
            )["access_token"]
            write_token_file(alice["BEARER_TOKEN_FILE"], renewed)
            digest = hashlib.sha256(renewed.encode()).hexdigest()
            deadline = time.monotonic() + 30
            while set(client.run(token_file_digest).values()) != {digest}:
                assert time.monotonic() < deadline, "the worker's token was never renewed"
                time.sleep(0.5)
            assert with_uproot.run([url], client).events == result.events
        finally:
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        schedd = sched.locate(protected.collector, protected.schedd_name)
        ads = sched.job_ads(schedd, f'RjqClusterId == "{cluster.cluster_id}"', [])
    assert (
        result.events
        == dataset.read_manifest(xrootd.origin_data_dir(protected))["files"][0]["events"]
    )
    assert "StorageAccessDenied" in said and "expired" in said, said
    assert "on " in said.rsplit("(", 1)[-1]  # where it ran
    assert ads and not any(t in str(ad) for ad in ads for t in (spooled, renewed))
