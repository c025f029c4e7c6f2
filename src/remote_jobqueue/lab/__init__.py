"""remote-jobqueue in JupyterLab: the server side of the "Create new cluster" dialog that the
`remote-jobqueue-lab` extension adds to dask-labextension's Dask panel.

`GET /remote-jobqueue/sites` fills the dialog's site picker; `PUT /remote-jobqueue/clusters`
starts the chosen cluster through dask-labextension's own manager, so the panel lists, scales
and closes it like any other.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

#: Where the routes live, under the server's base URL.
ROUTE = "remote-jobqueue"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "remote_jobqueue.lab"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # The wheel installs the prebuilt extension as shared data; this names it for
    # `jupyter labextension` tools that look for it in the package.
    return [{"src": "labextension", "dest": "remote-jobqueue-lab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import ClustersHandler, SitesHandler

    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "sites"), SitesHandler),
            (url_path_join(base, "clusters"), ClustersHandler),
        ],
    )
    serverapp.log.info("remote_jobqueue.lab: routes under %s", base)
