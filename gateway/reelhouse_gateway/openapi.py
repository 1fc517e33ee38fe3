"""The OpenAPI 3.1 description of everything the gateway answers; a test keeps it equal to the routes."""

from __future__ import annotations

from functools import cache
from typing import Any


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, tag: str, responses: dict[str, dict], *, secure: bool = True, body: dict | None = None,
        parameters: list | None = None) -> dict:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if not secure:
        op["security"] = []
    if body is not None:
        op["requestBody"] = _body(body)
    if parameters:
        op["parameters"] = parameters
    return op


AUTH_ERRORS = {"401": _error("Missing, expired or invalid access token")}
ADMIN_ERRORS = {**AUTH_ERRORS, "403": _error("The caller is not an admin")}
BAD_BODY = {"400": _error("The body is not a JSON object"), "422": _error("A field is missing or invalid")}
RATE = {"429": _error("Too many attempts from this address; see Retry-After")}
PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
]
USER_ID = [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}]

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "pattern": "^[a-z0-9_]+$"}, "message": {"type": "string"}},
        }},
    },
    "Tenant": {"type": "object", "required": ["id", "name"],
               "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
    "User": {
        "type": "object", "required": ["id", "email", "display_name", "role", "tenant_id"],
        "properties": {
            "id": {"type": "string"}, "email": {"type": "string", "format": "email"},
            "display_name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
            "tenant_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Tokens": {
        "type": "object", "required": ["access_token", "refresh_token", "expires_in", "token_type"],
        "properties": {
            "user": _ref("User"),
            "access_token": {"type": "string"}, "refresh_token": {"type": "string"},
            "expires_in": {"type": "integer", "description": "seconds the access token is valid"},
            "token_type": {"type": "string", "const": "Bearer"},
        },
    },
    "Registration": {
        "allOf": [_ref("Tokens"), {"type": "object", "required": ["tenant", "user"],
                                   "properties": {"tenant": _ref("Tenant"), "user": _ref("User")}}],
    },
    "UserPage": {
        "type": "object", "required": ["items", "total", "page", "per_page"],
        "properties": {"items": {"type": "array", "items": _ref("User")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
        "type": "object", "required": ["kty", "kid", "alg"],
        "properties": {"kty": {"type": "string"}, "kid": {"type": "string"}, "alg": {"type": "string"}}}}}},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Ready": {"type": "object", "required": ["checks"],
              "properties": {"status": {"type": "string"}, "checks": {"type": "object",
                                                                       "additionalProperties": {"type": "string"}}}},
}

PASSWORD = {"type": "string", "minLength": 10, "maxLength": 1024}


def _paths() -> dict[str, dict]:
    return {
        "/api/auth/register": {"post": _op(
            "Create an organisation and its first (admin) user", "auth",
            {"201": _json(_ref("Registration"), "Created"), **BAD_BODY, "409": _error("Organisation exists"), **RATE},
            secure=False, body={"type": "object", "required": ["tenant_name", "email", "password"], "properties": {
                "tenant_name": {"type": "string", "maxLength": 100}, "email": {"type": "string", "format": "email"},
                "password": PASSWORD, "display_name": {"type": "string"}}})},
        "/api/auth/login": {"post": _op(
            "Log in with email and password", "auth",
            {"200": _json(_ref("Tokens")), **BAD_BODY, "401": _error("Wrong email or password"),
             "409": _error("The email belongs to several organisations: pass tenant"), **RATE},
            secure=False, body={"type": "object", "required": ["email", "password"], "properties": {
                "email": {"type": "string"}, "password": {"type": "string"},
                "tenant": {"type": "string", "description": "organisation id or name"}}})},
        "/api/auth/refresh": {"post": _op(
            "Swap a refresh token for a new pair (the old one is spent; reuse signs out its whole family)", "auth",
            {"200": _json(_ref("Tokens")), **BAD_BODY, "401": _error("Invalid, expired or reused refresh token")},
            secure=False, body={"type": "object", "required": ["refresh_token"],
                                "properties": {"refresh_token": {"type": "string"}}})},
        "/api/auth/logout": {"post": _op(
            "Revoke a refresh token and every token rotated from it", "auth",
            {"204": {"description": "Logged out"}, **BAD_BODY}, secure=False,
            body={"type": "object", "required": ["refresh_token"],
                  "properties": {"refresh_token": {"type": "string"}}})},
        "/api/auth/me": {"get": _op(
            "The caller and their organisation", "auth",
            {"200": _json({"type": "object", "required": ["user", "tenant"],
                           "properties": {"user": _ref("User"), "tenant": _ref("Tenant")}}), **AUTH_ERRORS})},
        "/api/auth/.well-known/jwks.json": {"get": _op(
            "Public keys that verify access tokens", "auth", {"200": _json(_ref("Jwks"))}, secure=False)},
        "/api/auth/users": {
            "get": _op("Users of the caller's organisation", "users", {"200": _json(_ref("UserPage")), **ADMIN_ERRORS,
                                                                       "422": _error("Bad paging parameters")},
                       parameters=PAGING),
            "post": _op("Add a user", "users",
                        {"201": _json(_ref("User"), "Created"), **BAD_BODY, **ADMIN_ERRORS,
                         "409": _error("Email taken in this organisation")},
                        body={"type": "object", "required": ["email", "password", "role"], "properties": {
                            "email": {"type": "string", "format": "email"}, "password": PASSWORD,
                            "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
                            "display_name": {"type": "string"}}}),
        },
        "/api/auth/users/{user_id}": {
            "get": _op("One user", "users", {"200": _json(_ref("User")), **ADMIN_ERRORS,
                                             "404": _error("No such user in this organisation")},
                       parameters=USER_ID),
            "patch": _op("Change a user's role or display name", "users",
                         {"200": _json(_ref("User")), **BAD_BODY, **ADMIN_ERRORS, "404": _error("No such user"),
                          "409": _error("It would leave the organisation without an admin")},
                         parameters=USER_ID, body={"type": "object", "properties": {
                             "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
                             "display_name": {"type": "string"}}}),
            "delete": _op("Remove a user (their sessions end)", "users",
                          {"204": {"description": "Removed"}, **ADMIN_ERRORS, "404": _error("No such user"),
                           "409": _error("It would leave the organisation without an admin")},
                          parameters=USER_ID),
        },
        "/healthz": {"get": _op("Alive", "operations", {"200": _json(_ref("Health"))}, secure=False)},
        "/readyz": {"get": _op("Dependencies reachable", "operations",
                               {"200": _json(_ref("Ready")), "503": _json(_ref("Ready"), "A dependency is down")},
                               secure=False)},
        "/metrics": {"get": _op("Prometheus metrics", "operations", {"200": {
            "description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}, secure=False)},
        "/api/openapi.json": {"get": _op("This document", "operations", {"200": _json({"type": "object"})},
                                         secure=False)},
        "/api/docs": {"get": _op("Interactive API documentation", "operations", {"200": {
            "description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}}, secure=False)},
    }


@cache
def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Reelhouse API", "version": "0.1.0",
                 "description": "Multi-tenant video platform. Errors are always "
                                "`{\"error\": {\"code\": \"snake_case\", \"message\": \"…\"}}`."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "auth"}, {"name": "users", "description": "admin only"}, {"name": "operations"}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
