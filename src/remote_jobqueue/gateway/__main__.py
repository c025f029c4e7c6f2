"""``python -m remote_jobqueue.gateway``: run the gateway (see :func:`.cli.main`)."""

from .cli import main

raise SystemExit(main())
