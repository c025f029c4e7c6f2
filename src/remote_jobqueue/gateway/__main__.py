"""``python -m remote_jobqueue.gateway``: run the gateway (see :func:`.server.main`)."""

from .server import main

raise SystemExit(main())
