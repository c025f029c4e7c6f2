"""Hub side: refresh a user's access token *before* it expires, for OAuthenticator.

OAuthenticator only refreshes after the provider rejects a token. Set
``c.GenericOAuthenticator.refresh_user_hook = RefreshAhead(margin=...)`` and a short
``c.Authenticator.auth_refresh_age``: every authenticated request (the refresher's pull of
auth_state is one) then renews a token that is within its renewal window, a few seconds ahead
of the refresher's own window (`expiry.HUB_LEAD`), so the refresher finds the new token.
"""

from __future__ import annotations

import time
from typing import Any

from ..gateway.protocol import GATEWAY_SCOPE
from ..tokens import TokenError, redact
from .expiry import HUB_LEAD, lifetime_and_expiry, refresh_due
from .vault import RefreshTokenVault

#: The gateway's custom scope, for ``c.JupyterHub.custom_scopes``.
CUSTOM_SCOPES = {
    GATEWAY_SCOPE: {
        "description": "Log in to the remote-jobqueue gateway as the user (their clusters).",
    }
}
#: Users must hold what their server token asks for (`mixin.SERVER_SCOPES`).
USER_ROLE = {
    "name": "user",
    "scopes": ["self", "admin:auth_state!user", f"{GATEWAY_SCOPE}!user"],
}


class RefreshAhead:
    """A ``refresh_user_hook``: renew with the refresh token when ``exp`` is near.

    Returns True (token good for a while, or issuer briefly unreachable while it is still
    valid), False (refresh refused and the token is dead: log in again), or the new auth model.
    """

    def __init__(
        self,
        margin: float = 300.0,
        lead: float = HUB_LEAD,
        refresh_params: dict[str, str] | None = None,
        vault: RefreshTokenVault | None = None,
    ) -> None:
        self.margin = margin
        self.lead = lead
        #: Extra form fields of the refresh request (OAuthenticator's ``token_params`` only
        #: go into the first, authorization-code request), e.g. a narrower ``scope``.
        self.refresh_params = dict(refresh_params or {})
        #: Where refresh tokens are, if not in auth_state (see `vault.RefreshTokenVault`).
        self.vault = vault

    async def __call__(
        self, authenticator: Any, user: Any, auth_state: dict[str, Any] | None
    ) -> bool | dict[str, Any] | None:
        token = (auth_state or {}).get("access_token")
        if not token:
            return None  # nothing we understand: OAuthenticator's own logic decides
        try:
            if not refresh_due(token, self.margin, lead=self.lead):
                return True
            alive = lifetime_and_expiry(token)[1] > time.time()
        except TokenError:
            return None
        handle = (auth_state or {}).get("refresh_handle")
        if self.vault is not None:
            refresh_token = await self.vault.get(handle)
        else:
            refresh_token = (auth_state or {}).get("refresh_token")
        if not refresh_token:
            authenticator.log.warning(
                "%s's token %s is due for renewal but there is no refresh token%s",
                user.name,
                redact(token),
                f" (vault handle {'set' if handle else 'missing'})" if self.vault else "",
            )
            return alive
        params = {
            **authenticator.build_refresh_token_request_params(refresh_token),
            **self.refresh_params,
        }
        try:
            token_info = await authenticator.get_token_info(None, params)
        except Exception as err:
            code = getattr(err, "code", None) or getattr(err, "status_code", None)
            refused = isinstance(code, int) and 400 <= code < 500
            authenticator.log.warning(
                "refreshing %s's token %s failed (%s)%s",
                user.name,
                redact(token),
                type(err).__name__,
                ": login needed" if refused or not alive else "; keeping it while valid",
            )
            return False if refused else alive
        token_info.setdefault("refresh_token", refresh_token)
        # The same path as a login builds auth_state (userinfo, groups, hooks: the vault's too).
        model = await authenticator._token_to_auth_model(token_info)
        if self.vault is not None and model["auth_state"].get("refresh_handle") != handle:
            await self.vault.drop(handle)
        authenticator.log.info(
            "refreshed %s's access token ahead of expiry: %s",
            user.name,
            redact(token_info["access_token"]),
        )
        return model
