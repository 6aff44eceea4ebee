"""Bearer-token check for the webhooks: the token comes from a file (a mounted Secret).

The file is re-read when its modification time or size changes, so rotating the Secret takes
effect without a restart (the kubelet swaps the mounted file). The comparison is constant-time.
A file that becomes unreadable keeps the last good token and is logged; an empty file at start
is a configuration error.
"""

from __future__ import annotations

import hmac
import os

import structlog

log = structlog.get_logger(__name__)


class TokenError(ValueError):
    """The token file is missing, unreadable or empty."""


class TokenFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = b""
        self._refresh(strict=True)

    def _refresh(self, *, strict: bool) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            with open(self.path, "rb") as handle:
                token = handle.read(4096).strip()
        except OSError as exc:
            if strict:
                raise TokenError(f"cannot read --token-file {self.path}: {exc}") from exc
            log.warning("responder.token_unreadable", path=self.path, error=str(exc))
            return
        if not token:
            if strict:
                raise TokenError(f"--token-file {self.path} is empty")
            log.warning("responder.token_empty", path=self.path, kept="previous token")
            return
        if self._stamp is not None:
            log.info("responder.token_reloaded", path=self.path)
        self._token, self._stamp = token, stamp

    def check(self, authorization: str | None) -> str:
        """ "" when the header carries the token, else why not (never the token itself)."""
        self._refresh(strict=False)
        if not authorization:
            return "missing Authorization header"
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "Authorization is not a bearer token"
        # A header is decoded with surrogateescape: its bytes come back exactly, never an error.
        if not hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), self._token
        ):
            return "wrong bearer token"
        return ""
