"""The gateway's command line, kept out of the server so that importing it stays side-effect free.

``python -m remote_jobqueue.gateway`` and ``remote-jobqueue gateway`` both run :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from ..tokens import TokenValidator
from .auth import Authenticator, ChainAuthenticator, JWTAuthenticator
from .hostkeys import load_or_create_host_key, public_key_text
from .limits import AddressLimits
from .protocol import parse_host_port
from .server import serve

log = logging.getLogger(__name__)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="remote-jobqueue gateway",
        description="SSH gateway: routes each user's tunnels to their own remote Dask clusters.",
    )
    p.add_argument("--listen", default="0.0.0.0:2222", help="host:port (default %(default)s)")
    p.add_argument("--host-key", required=True, help="ed25519 host key, created if missing")
    p.add_argument("--issuer", help="OIDC issuer URL whose access tokens are accepted")
    p.add_argument("--audience", action="append", help="accepted audience (repeatable)")
    p.add_argument("--identity-claim", default="preferred_username")
    p.add_argument(
        "--hub-api-url",
        help="also accept JupyterHub API tokens, checked at this Hub API (…/hub/api)",
    )
    p.add_argument("--hub-token-ttl", type=float, default=60.0, help="cache Hub answers (s)")
    p.add_argument(
        "--hub-service-token-file",
        help="file of the gateway's own Hub token (admin:auth_state, read:users), to read "
        "users' subjects; without it the user's token must be allowed to",
    )
    p.add_argument(
        "--hub-recheck",
        type=float,
        default=300.0,
        help="a Hub-token login lasts this long unless renewed (s, default %(default)s)",
    )
    p.add_argument(
        "--max-preauth-per-address",
        type=_at_least_one,
        default=AddressLimits.max_preauth,
        help="unauthenticated connections one client address may hold (default %(default)s)",
    )
    p.add_argument(
        "--max-failed-logins",
        type=_at_least_one,
        default=AddressLimits.max_failures,
        help="refused logins per client address and minute before its logins are refused "
        "unchecked (default %(default)s)",
    )
    p.add_argument("--print-host-key", action="store_true", help="print the public key and exit")
    p.add_argument("--log-level", default="INFO")
    return p


def _limits(args: argparse.Namespace) -> AddressLimits:
    return AddressLimits(
        max_preauth=args.max_preauth_per_address, max_failures=args.max_failed_logins
    )


async def _run(args: argparse.Namespace) -> None:
    validator = TokenValidator(args.issuer, args.audience)
    authenticator: Authenticator = JWTAuthenticator(validator, identity_claim=args.identity_claim)
    if args.hub_api_url:
        from .hubauth import HubTokenAuthenticator

        service = None
        if args.hub_service_token_file:
            service = Path(args.hub_service_token_file).read_text().strip()
        hub = HubTokenAuthenticator(
            args.hub_api_url,
            args.issuer,
            service_token=service,
            ttl=args.hub_token_ttl,
            recheck=args.hub_recheck,
        )
        authenticator = ChainAuthenticator(authenticator, hub)
    host, port = parse_host_port(args.listen)
    gateway, _ = await serve(host, port, args.host_key, authenticator, limits=_limits(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with gateway:
        await stop.wait()
        log.info("stopping")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m remote_jobqueue.gateway``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.print_host_key:
        print(public_key_text(load_or_create_host_key(args.host_key)))
        return 0
    if not args.issuer or not args.audience:
        parser.error("--issuer and --audience are required to serve")
    if not 0 < args.hub_token_ttl <= args.hub_recheck:
        parser.error(
            "want 0 < --hub-token-ttl <= --hub-recheck (a cached answer must not "
            "outlive the recheck)"
        )
    asyncio.run(_run(args))
    return 0
