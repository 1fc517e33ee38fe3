"""load_signing_key: a generated Ed25519 key file (mode 0600, stable kid) or JWT_PRIVATE_KEY (Ed25519/RSA)."""

from __future__ import annotations

import os
import stat
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.config import Config, ConfigError
from services.signing_keys import KEY_FILE, load_signing_key
from services.tokens import StaticKeySource, TokenVerifier

PRIVATE_JWK_FIELDS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture
def permissive_umask():
    """With umask 0 a file gets exactly the mode it was created with: 0600 must come from the code."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def config_for(tmp_path, **env) -> Config:
    return Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path / "data"), **env})


def round_trip(key) -> dict:
    now = int(time.time())
    token = jwt.encode({"sub": "u", "tid": "t", "role": "viewer", "typ": "access", "iss": "reelhouse",
                        "aud": "reelhouse", "iat": now, "exp": now + 60},
                       key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
    verifier = TokenVerifier(StaticKeySource(key.jwks), issuer="reelhouse", audience="reelhouse")
    return verifier.claims(token)


def test_generated_key_file_is_private_and_stable(tmp_path, permissive_umask):
    config = config_for(tmp_path)
    key = load_signing_key(config)
    path = config.data_dir / KEY_FILE
    assert path == config.data_dir / "keys" / "jwt-ed25519.pem"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0  # keys/ is not group/world readable
    assert key.algorithm == "EdDSA"
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")

    again = load_signing_key(config)
    assert again.kid == key.kid
    assert again.public_jwk == key.public_jwk
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generated_key_signs_verifiable_tokens(tmp_path):
    key = load_signing_key(config_for(tmp_path))
    assert round_trip(key)["sub"] == "u"
    assert key.public_jwk["kty"] == "OKP" and key.public_jwk["crv"] == "Ed25519"
    assert key.public_jwk["kid"] == key.kid and key.public_jwk["alg"] == "EdDSA"
    assert key.public_jwk["use"] == "sig"
    assert not PRIVATE_JWK_FIELDS & set(key.public_jwk)
    assert key.jwks == {"keys": [key.public_jwk]}


def test_different_data_dirs_get_different_keys(tmp_path):
    first = load_signing_key(Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path / "one")}))
    second = load_signing_key(Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path / "two")}))
    assert first.kid != second.kid


def test_rsa_pem_from_env(tmp_path, rsa_pem):
    config = config_for(tmp_path, JWT_PRIVATE_KEY=rsa_pem.decode())
    key = load_signing_key(config)
    assert key.algorithm == "RS256"
    assert key.public_jwk["kty"] == "RSA" and key.public_jwk["alg"] == "RS256"
    assert not PRIVATE_JWK_FIELDS & set(key.public_jwk)
    assert round_trip(key)["sub"] == "u"
    assert load_signing_key(config).kid == key.kid
    assert not (config.data_dir / KEY_FILE).exists()  # nothing generated when a key is given


def test_pem_with_escaped_newlines_from_env(tmp_path, ed25519_pem):
    """Environment files often carry a PEM on one line with literal \\n sequences."""
    one_line = ed25519_pem.decode().strip().replace("\n", "\\n")
    key = load_signing_key(config_for(tmp_path, JWT_PRIVATE_KEY=one_line))
    assert key.algorithm == "EdDSA"
    assert key.kid == load_signing_key(config_for(tmp_path, JWT_PRIVATE_KEY=ed25519_pem.decode())).kid
    assert round_trip(key)["sub"] == "u"


def test_traditional_rsa_pem_format(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert load_signing_key(config_for(tmp_path, JWT_PRIVATE_KEY=pem.decode())).algorithm == "RS256"


def _pem(key, password: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


@pytest.mark.parametrize(
    "make_pem",
    [
        lambda: "not a pem at all",
        lambda: "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
        lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 - must be refused
        lambda: _pem(ec.generate_private_key(ec.SECP256R1())),
        lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), password=b"secret"),
    ],
    ids=["garbage", "garbage-pem", "rsa-1024", "ec-p256", "encrypted"],
)
def test_unusable_private_key_is_a_config_error_naming_the_variable(tmp_path, make_pem):
    config = config_for(tmp_path, JWT_PRIVATE_KEY=make_pem())
    with pytest.raises(ConfigError) as info:
        load_signing_key(config)
    assert "JWT_PRIVATE_KEY" in str(info.value)
    assert not (config.data_dir / KEY_FILE).exists()


def test_concurrent_first_starts_share_one_signing_key(tmp_path):
    import threading

    from services.config import Config
    from services.signing_keys import load_signing_key

    config = Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path / "data")})
    kids, errors = [], []

    def start():
        try:
            kids.append(load_signing_key(config).kid)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(kids)) == 1 and len(kids) == 8
    assert [p.name for p in (tmp_path / "data" / "keys").iterdir()] == ["jwt-ed25519.pem"]
