"""The body of `PUT /remote-jobqueue/clusters`, checked before anything starts, so a typo in
the dialog is a 400 that says what is wrong, not a cluster that fails minutes later."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dask.utils import parse_bytes

from .. import sites


class BadRequest(ValueError):
    """The request cannot start any cluster; the message says why, for the user."""


@dataclass(frozen=True)
class ClusterRequest:
    site: str
    cores: int
    memory: str
    image: str | None

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `RemoteHTCondorCluster`; no image means the site's."""
        kwargs: dict[str, Any] = {"site": self.site, "cores": self.cores, "memory": self.memory}
        if self.image:
            kwargs["image"] = self.image
        return kwargs


def known_sites() -> list[str]:
    """What ``site`` may be: "random" (when a remote site exists), each site, "local"."""
    names = sorted(n for n, s in sites.catalogue().items() if not s.is_local)
    return [sites.RANDOM, *names, sites.LOCAL] if names else [sites.LOCAL]


def parse(body: bytes) -> ClusterRequest:
    """The request in ``body`` (JSON), or `BadRequest` naming the first field that is wrong."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as err:
        raise BadRequest(f"the body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object {site, cores, memory, image}")
    return ClusterRequest(
        site=_site(data.get("site")),
        cores=_cores(data.get("cores")),
        memory=_memory(data.get("memory")),
        image=_image(data.get("image")),
    )


def _got(value: Any) -> str:
    """How a refused value reads in a message: a blank field of the dialog is "nothing"."""
    return "(got nothing)" if value is None else f"(got {value!r})"


def _site(value: Any) -> str:
    known = known_sites()
    if value not in known:
        raise BadRequest(f"unknown site {value!r}; known sites: {', '.join(known)}")
    return value


def _cores(value: Any) -> int:
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise BadRequest(f"cores must be a whole number of at least 1 {_got(value)}")
    return int(value)


def _memory(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"memory must be a size such as '4 GiB' {_got(value)}")
    try:
        size = parse_bytes(value)
    except ValueError:
        raise BadRequest(f"memory must be a size such as '4 GiB' {_got(value)}") from None
    if size < 1:
        raise BadRequest(f"memory must be at least one byte {_got(value)}")
    return value.strip()


def _image(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"image must be text, an image name or path {_got(value)}")
    return value.strip() or None
