"""The development facility's own OIDC issuer (`rjq_facility.issuer`), served for real on a
loopback port from a thread, with a state directory of the test's own and a clock it can move.

Tests play the device (`device_authorization`, `poll`) and the person at the browser
(`answer`, with ``requests``), so they read as the steps of RFC 8628.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import requests
import tornado.httpserver
import tornado.netutil

from remote_jobqueue import tokens
from rjq_facility import issuer

CLIENT = issuer.PUBLIC_CLIENT
#: One RSA key for every issuer of the session: making one takes most of a second.
_signing_key: bytes | None = None


def _make_state(state_dir: Path, url: str) -> None:
    global _signing_key
    key_path = issuer.issuer_dir(state_dir) / "signing-key.pem"
    if _signing_key is not None:
        key_path.parent.mkdir(parents=True, mode=0o700)
        tokens.write_private_file(key_path, _signing_key)
    issuer.ensure_state(state_dir, ["alice", "bob"], url)
    _signing_key = key_path.read_bytes()


class ServedIssuer:
    """An `issuer.Issuer` behind `issuer.make_app` on 127.0.0.1, users alice and bob."""

    def __init__(self, state_dir: Path, **settings: Any) -> None:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        _make_state(state_dir, self.url)
        self.skew = 0.0
        self.issuer = issuer.Issuer(state_dir, self.url, clock=self.clock, **settings)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = tornado.httpserver.HTTPServer(issuer.make_app(self.issuer))
            self.server.add_sockets(sockets)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="facility-issuer", daemon=True)
        self.thread.start()
        started.wait(10)

    # time

    def clock(self) -> float:
        """The issuer's time for the device flow: real time, plus what tests skipped."""
        return time.time() + self.skew

    def advance(self, seconds: float) -> None:
        self.skew += seconds

    # the device

    def device_authorization(self, **form: Any) -> dict[str, Any]:
        endpoint = f"{self.url}/device_authorization"
        return tokens.token_request(endpoint, form, client_id=CLIENT)

    def poll(self, device_code: str, client_id: str = CLIENT) -> dict[str, Any]:
        """One poll of the token endpoint; raises `tokens.TokenRequestError` with its error."""
        form = {"grant_type": issuer.DEVICE_CODE_GRANT, "device_code": device_code}
        return tokens.token_request(f"{self.url}/token", form, client_id=client_id)

    def error_of_poll(self, device_code: str, client_id: str = CLIENT) -> str:
        try:
            self.poll(device_code, client_id)
        except tokens.TokenRequestError as err:
            return err.error
        raise AssertionError("the poll got tokens")

    # the person at the browser

    def password(self, user: str) -> str:
        return self.issuer.users[user]["password"]

    def answer(
        self,
        user_code: str,
        user: str = "alice",
        action: str = "approve",
        password: str | None = None,
    ) -> requests.Response:
        """Submit the /device form as a person would: code, name, password, a button."""
        form = {
            "user_code": user_code,
            "username": user,
            "password": self.password(user) if password is None else password,
            "action": action,
        }
        return requests.post(f"{self.url}/device", data=form, timeout=10)

    def refresh_works(self, refresh_token: str) -> bool:
        try:
            tokens.refresh_access_token(f"{self.url}/token", refresh_token, client_id=CLIENT)
        except tokens.TokenRequestError as err:
            assert err.error == "invalid_grant"
            return False
        return True

    def close(self) -> None:
        """Stop serving (the port refuses connections from now on); again is a no-op."""
        if self.loop.is_closed():
            return

        def stop() -> None:
            self.server.stop()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        self.loop.close()
