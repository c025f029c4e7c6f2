"""Keeps a detached run's bearer token fresh, with the run's own refresh token.

With no client attached, nobody offers the bundle a renewed token (see `agent.py`), so a
run would end when its access token does. The client handed the bundle a refresh token for
this run (see `run_token.py`); shortly before the access token expires we refresh it at the
issuer and give the new one to `SiteAgent.renew_token`, which keeps it only if the gateway
takes it, exactly as for a token a client offers. When the cluster ends the refresh token is
revoked and deleted: it must not outlive the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import tokens

logger = logging.getLogger("remote_jobqueue.bundle")

#: Renew this long before expiry at most (a quarter of a short token's lifetime otherwise).
MARGIN = 300.0
#: After a failed attempt (issuer or gateway unreachable), try again this soon.
RETRY = 15.0


class TokenRenewer:
    def __init__(
        self,
        renewal: dict[str, Any],
        refresh_file: Path,
        token_file: Path,
        renew_token: Callable[[str], Awaitable[bool]],
        *,
        timeout: float = 10.0,
    ) -> None:
        self.renewal = renewal
        self.issuer, self.client_id = renewal["issuer"], renewal["client_id"]
        self.refresh_file, self.token_file = refresh_file, token_file
        self.renew_token, self.timeout = renew_token, timeout
        self._task: asyncio.Task | None = None
        #: The renewal in flight, if any: `close` lets it finish, since the issuer may already
        #: have rotated the refresh token it uses (the new one is only known once it returns).
        self._renewal: asyncio.Future[bool] | None = None

    def due_in(self, now: float | None = None) -> float:
        """Seconds until the current access token should be renewed (0: now)."""
        now = time.time() if now is None else now
        try:
            claims = tokens.token_claims_unverified(self.token_file.read_text())
        except (tokens.TokenError, OSError, ValueError):
            return 0.0
        exp = float(claims.get("exp", now))
        lifetime = max(0.0, exp - float(claims.get("iat", now)))
        return max(0.0, exp - min(MARGIN, lifetime / 4) - now)

    async def renew_once(self) -> bool:
        """Refresh at the issuer and hand the new token on; True if it was taken."""
        refresh = self.refresh_file.read_text().strip()
        doc = await asyncio.to_thread(tokens.fetch_discovery, self.issuer, timeout=self.timeout)
        response = await asyncio.to_thread(
            tokens.refresh_access_token,
            doc["token_endpoint"],
            refresh,
            client_id=self.client_id,
            timeout=self.timeout,
        )
        rotated = response.get("refresh_token")
        if rotated and rotated != refresh:  # issuers may rotate it: the old one is dead now
            tokens.write_private_file(self.refresh_file, rotated)
        taken = await self.renew_token(response["access_token"])
        if taken:
            logger.info("renewed the run's bearer token with its refresh token")
        return taken

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self.due_in())
            try:
                self._renewal = asyncio.ensure_future(self.renew_once())
                if await asyncio.shield(self._renewal):
                    continue
                logger.warning("the renewed bearer token was not taken; trying again")
            except tokens.TokenRequestError as err:
                if err.error == "invalid_grant":  # revoked or expired: no retry can help
                    logger.error(
                        "the run's refresh token was refused (%s); the run ends when its "
                        "bearer token expires",
                        err,
                    )
                    return
                logger.warning("renewing the bearer token failed: %s; trying again", err)
            except (tokens.TokenError, OSError, KeyError) as err:
                logger.warning("renewing the bearer token failed: %s; trying again", err)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the type only: a message could quote a token
                logger.warning("renewing the bearer token failed (%s); trying again", type(err))
            await asyncio.sleep(RETRY)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._keep_fresh())

    async def close(self) -> None:
        """Stop, revoke the refresh token at the issuer, and delete it."""
        from ..run_token import revoke

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._renewal is not None and not self._renewal.done():
            with contextlib.suppress(Exception):  # bounded by the requests' timeouts
                await asyncio.wait_for(self._renewal, 3 * self.timeout)
        with contextlib.suppress(OSError):
            refresh = self.refresh_file.read_text().strip()
            if refresh and not await asyncio.to_thread(revoke, self.renewal, refresh):
                logger.warning("could not revoke the run's refresh token at %s", self.issuer)
        self.refresh_file.unlink(missing_ok=True)
