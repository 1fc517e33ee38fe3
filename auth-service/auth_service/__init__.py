"""auth-service: tenants, users, roles, JWT issue/refresh/revoke and the JWKS."""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from auth_service import sessions, users
from auth_service.accounts import Accounts
from auth_service.lockout import AccountLockout
from services.bootstrap import Dependencies, bootstrap
from services.config import Config
from services.web import create_base_app, rate_limiter


def _check_storage(limiter: Limiter) -> None:
    if not limiter.storage.check():
        raise ConnectionError("the rate-limit storage does not answer")


def create_app(config: Config | None = None, deps: Dependencies | None = None) -> Flask:
    deps = deps or bootstrap(config)
    app = create_base_app("auth-service", deps, readiness={"metadata": deps.metadata.ping}, import_name=__name__)
    app.extensions["accounts"] = Accounts(deps.metadata, deps.signing_key, deps.config)
    app.register_blueprint(sessions.bp)
    app.register_blueprint(users.bp)
    limiter = rate_limiter(app, get_remote_address, deps.config, "auth")
    app.extensions["reelhouse.readiness"]["rate_limits"] = lambda: _check_storage(limiter)
    app.extensions["lockout"] = AccountLockout(limiter, deps.config.account_login_rate_limit,
                                               deps.config.refresh_token_ttl, f"{deps.config.broker_namespace}-account")
    for endpoint, limit in (("sessions.login", deps.config.login_rate_limit),
                            ("sessions.register", deps.config.register_rate_limit)):
        # Wrapped per app (not at import) so the limit comes from this app's config.
        app.view_functions[endpoint] = limiter.limit(limit)(app.view_functions[endpoint])
    return app
