"""Failed logins counted per account, across every client address (AUTH_ACCOUNT_LOGIN_RATE_LIMIT).

The per-address limit alone lets a botnet (or anyone behind many proxies) try one account's password from
thousands of addresses. Here failures for one email are counted together wherever they come from; once the
limit is reached that account answers 429 until the window passes, so the lock always lifts by itself. An
address the account has logged in from before is not locked out: the real user keeps getting in from their
usual place while somebody else hammers the account (each of their attempts still counts per address).

Counters live in the rate-limit storage (memory or Redis: shared by replicas), keyed by a hash of the email so
no address book sits in Redis. If that storage is down, logins go on unguarded, as the other limits do.
"""

from __future__ import annotations

import hashlib
import logging
import time

import limits
from flask_limiter import Limiter

from services.errors import ApiError

log = logging.getLogger(__name__)


class AccountLockout:
    def __init__(self, limiter: Limiter, limit: str, remember_seconds: int, prefix: str):
        self.limiter, self.limit = limiter, limits.parse(limit)
        self.remember_seconds, self.prefix = remember_seconds, prefix

    def _account(self, email: str) -> str:
        return hashlib.sha256(email.strip().lower().encode()).hexdigest()

    def _known_key(self, email: str, address: str) -> str:
        return f"{self.prefix}/known/{self._account(email)}/{hashlib.sha256(address.encode()).hexdigest()[:32]}"

    def check(self, email: str, address: str) -> None:
        """429 if the account is locked and `address` is not one it has logged in from."""
        try:
            if self.limiter.limiter.test(self.limit, self.prefix, self._account(email)):
                return
            if self.limiter.storage.get(self._known_key(email, address)) > 0:
                return
            reset_at = self.limiter.limiter.get_window_stats(self.limit, self.prefix, self._account(email)).reset_time
        except Exception as error:  # the counters' store is down: fail open, /readyz shows it
            log.warning("account lockout check skipped: %s", error)
            return
        wait = max(1, int(reset_at - time.time()))
        raise ApiError(429, "rate_limited", f"Too many failed logins for this account; retry in {wait} s.",
                       headers={"Retry-After": str(wait)})

    def failed(self, email: str) -> None:
        self._quietly(lambda: self.limiter.limiter.hit(self.limit, self.prefix, self._account(email)))

    def succeeded(self, email: str, address: str) -> None:
        """Remember `address` for the account, for `remember_seconds` from this (the latest) login."""
        key = self._known_key(email, address)

        def remember() -> None:
            self.limiter.storage.clear(key)  # incr keeps the first expiry: start the period again
            self.limiter.storage.incr(key, self.remember_seconds)
        self._quietly(remember)

    @staticmethod
    def _quietly(action) -> None:
        try:
            action()
        except Exception as error:  # never fail a login because the counters' store is down
            log.warning("account lockout counter not updated: %s", error)
