"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.errors import ApiError

MIN_LENGTH = 10
MAX_LENGTH = 1024  # hashing cost grows with length; nobody needs more


def check_policy(password: str) -> None:
    if len(password) < MIN_LENGTH or len(set(password)) < 2:
        raise ApiError(422, "weak_password",
                       f"Passwords need at least {MIN_LENGTH} characters and more than one distinct character.")
    if len(password) > MAX_LENGTH:
        raise ApiError(422, "weak_password", f"Passwords may have at most {MAX_LENGTH} characters.")


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None):
        self.hasher = hasher or PasswordHasher()
        # Verifying against this when the email is unknown keeps both failures equally slow.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, hashed: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(hashed or self._decoy, password) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        return self.hasher.check_needs_rehash(hashed)
