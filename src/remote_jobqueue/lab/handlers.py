"""The REST routes of `remote_jobqueue.lab`; each answers JSON, errors as ``{"message": ...}``
with the text the user needs (jupyter_server's own errors have the same shape)."""

from __future__ import annotations

import json
import logging
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..errors import GatewayError, StartTimeout
from . import request
from .choices import site_choices

logger = logging.getLogger("remote_jobqueue")


def status_of(err: BaseException) -> int:
    """The HTTP status of a cluster that did not start: the request's fault (unknown site,
    impossible size, refused settings) is 400; an unreachable gateway 502; a timeout 504."""
    if isinstance(err, GatewayError):
        return 502
    if isinstance(err, StartTimeout):
        return 504
    if isinstance(err, ValueError | KeyError):  # UnknownSite, InvalidSettings, Impossible...
        return 400
    return 500


def dask_panel_enabled(serverapp: Any) -> bool:
    """Is dask-labextension's server extension on? Without it a cluster we start would show in
    no panel, and nothing could close it but this server's exit."""
    extensions = getattr(getattr(serverapp, "extension_manager", None), "extensions", None)
    if extensions is None:
        return True  # not a server that says; let the manager decide
    package = extensions.get("dask_labextension")
    return bool(package and package.enabled)


class _JSONHandler(APIHandler):
    def reply(self, status: int, data: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class SitesHandler(_JSONHandler):
    """``GET /remote-jobqueue/sites``: the dialog's site picker and its defaults."""

    @web.authenticated
    async def get(self) -> None:
        try:
            choices = await site_choices()
        except Exception as err:  # a broken site catalogue: say so, as text
            logger.exception("cannot list the sites")
            self.reply(500, {"message": f"cannot list the sites: {err}"})
            return
        self.reply(200, choices)


class ClustersHandler(_JSONHandler):
    """``PUT /remote-jobqueue/clusters`` ``{site, cores, memory, image}``: start a cluster
    through dask-labextension's manager; 201 and its cluster model."""

    @web.authenticated
    async def put(self) -> None:
        try:
            wanted = request.parse(self.request.body)
        except request.BadRequest as err:
            self.reply(400, {"message": str(err)})
            return
        if not dask_panel_enabled(self.serverapp):
            message = "dask-labextension's server extension is not enabled in this server"
            self.reply(501, {"message": message})
            return
        try:
            from .factory import start_cluster
        except ImportError as err:
            self.reply(501, {"message": f"dask-labextension is not installed: {err}"})
            return
        try:
            model = await start_cluster(wanted.cluster_kwargs())
        except Exception as err:
            logger.warning("cluster at %s did not start: %s", wanted.site, err)
            self.reply(status_of(err), {"message": str(err) or type(err).__name__})
            return
        self.reply(201, model)
