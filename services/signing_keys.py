"""The auth service's signing key: from JWT_PRIVATE_KEY, or generated once into the data dir (mode 0600)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from services.config import Config, ConfigError

KEY_FILE = Path("keys") / "jwt-ed25519.pem"


@dataclass(frozen=True)
class SigningKey:
    private_key: Any
    algorithm: str  # "EdDSA" or "RS256"
    kid: str
    public_jwk: dict[str, Any]

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a kid that changes exactly when the key does."""
    required = {"OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def signing_key_from_pem(pem: bytes) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"JWT_PRIVATE_KEY: not an unencrypted PEM private key ({error})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm, jwk = "EdDSA", OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError("JWT_PRIVATE_KEY: RSA keys must have at least 2048 bits")
        algorithm, jwk = "RS256", RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        raise ConfigError("JWT_PRIVATE_KEY: only Ed25519 and RSA keys are supported")
    kid = _thumbprint(jwk)
    return SigningKey(key, algorithm, kid, {**jwk, "kid": kid, "alg": algorithm, "use": "sig"})


def _create_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes, creating it (mode 0600) on first use. Written whole to a private temp file, then
    linked into place: when two processes start together, one link wins and neither reads a half-written file."""
    if path.exists() and path.stat().st_size == 0:
        path.unlink(missing_ok=True)  # an empty file is an old crash's leftover: files are linked in whole
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".new-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(make())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return path.read_bytes()


def load_signing_key(config: Config) -> SigningKey:
    if config.jwt_private_key:
        return signing_key_from_pem(config.jwt_private_key.replace("\\n", "\n").encode())
    pem = _create_once(config.data_dir / KEY_FILE, lambda: ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return signing_key_from_pem(pem)


PLAYBACK_KEY_FILE = Path("keys") / "playback.key"


def load_playback_secret(config: Config) -> bytes:
    """PLAYBACK_SECRET (shared by every replica that issues or checks playback tokens), or a random secret
    generated once into the data dir (mode 0600)."""
    if config.playback_secret:
        return config.playback_secret.encode()
    return _create_once(config.data_dir / PLAYBACK_KEY_FILE, lambda: secrets.token_urlsafe(48).encode()).strip()
