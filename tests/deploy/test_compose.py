"""docker-compose.yml: valid against the Compose Specification schema, and a stack that starts in order and scales.

Schema: compose-spec.json as vendored by the PyPI package check-jsonschema (check_jsonschema/builtin_schemas/vendor/,
Apache-2.0, from https://github.com/compose-spec/compose-spec), validated with jsonschema, offline. Like
`docker compose config`, the file is validated after variable interpolation, which interpolate() below performs
with the Compose rules.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP = ("gateway", "auth-service", "upload-service", "stream-service", "notify-service", "transcode-worker")
# What an operator exports before `docker compose up` (the file's header says so).
OPERATOR_ENV = {
    "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nexample\n-----END PRIVATE KEY-----",
    "PLAYBACK_SECRET": "0123456789abcdef" * 4,
}


class InterpolationError(ValueError):
    pass


_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


def _interpolate_string(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        braced = _BRACED.fullmatch(match.group("braced"))
        if not braced:
            raise InterpolationError(f"invalid interpolation: ${{{match.group('braced')}}}")
        name, op, arg = braced.group("name", "op", "arg")
        value = env.get(name)
        unset_or_empty = not value
        missing = unset_or_empty if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return _interpolate_string(arg, env) if missing else value
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":+", "+"):
            return "" if missing else _interpolate_string(arg, env)
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation over every string value: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}, ${VAR:+alternative}, ${VAR+alternative}, and $$ for a literal $."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, str):
        return _interpolate_string(node, env)
    return node


def _raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(_raw(), OPERATOR_ENV)


def _schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def _dockerfile(service: dict[str, Any]) -> str:
    return (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).read_text()


def _services_with_healthcheck(compose: dict[str, Any]) -> set[str]:
    healthy = set()
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        if check and not check.get("disable") and check.get("test") not in (["NONE"], "NONE"):
            healthy.add(name)
        elif not check and "build" in service and re.search(r"^HEALTHCHECK\s+(?!NONE)", _dockerfile(service),
                                                            re.MULTILINE):
            healthy.add(name)
    return healthy


# --- the schema ----------------------------------------------------------------------------------------------------
def test_compose_file_validates_against_the_compose_spec(compose):
    schema = _schema()
    assert "Compose Specification" in schema.get("title", "")
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator_class(schema).iter_errors(compose)]
    assert errors == []


def test_schema_check_can_fail(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["transcode-worker"]["stop_grace_period"] = {"seconds": 60}
    broken["services"]["gateway"]["depends_on"]["mongodb"]["condition"] = "service_ready"
    broken["services"]["redis"]["helthcheck"] = {}
    validator = jsonschema.validators.validator_for(_schema())(_schema())
    paths = {error.json_path for error in validator.iter_errors(broken)}
    assert "$.services['transcode-worker'].stop_grace_period" in paths
    assert "$.services.gateway.depends_on" in paths  # no branch of its oneOf accepts condition: service_ready
    assert "$.services.redis" in paths  # additional property 'helthcheck'


def test_required_secrets_must_be_set():
    with pytest.raises(InterpolationError, match="JWT_PRIVATE_KEY"):
        interpolate(_raw(), {"PLAYBACK_SECRET": OPERATOR_ENV["PLAYBACK_SECRET"]})
    with pytest.raises(InterpolationError, match="PLAYBACK_SECRET"):
        interpolate(_raw(), {"JWT_PRIVATE_KEY": OPERATOR_ENV["JWT_PRIVATE_KEY"]})
    assert _interpolate_string("a$${B}-${C:-d}-${E-f}-${G:+h}", {"G": "x", "E": ""}) == "a${B}-d--h"


# --- start order, health, volumes ----------------------------------------------------------------------------------
def test_every_app_service_is_built_here_and_has_a_healthcheck(compose):
    built = {name for name, service in compose["services"].items() if "build" in service}
    assert built == set(APP)
    healthy = _services_with_healthcheck(compose)
    for name in APP:
        service = compose["services"][name]
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service.get("image", "").split(":")[0] == f"reelhouse/{name}", f"{name}: image name"
        assert name in healthy, f"{name}: no healthcheck, neither in the compose file nor in its Dockerfile"


def test_every_long_running_service_has_a_healthcheck(compose):
    healthy = _services_with_healthcheck(compose)
    for name, service in compose["services"].items():
        one_shot = service.get("restart") == "no"
        assert one_shot or name in healthy, f"{name}: no healthcheck, so nothing can wait for it"


def test_depends_on_waits_for_health(compose):
    healthy = _services_with_healthcheck(compose)
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on as a list only waits for the container to start"
        for target, condition in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = ("service_completed_successfully" if services[target].get("restart") == "no"
                        else "service_healthy")
            assert condition.get("condition") == expected, f"{name} -> {target}: condition {condition}"
            if expected == "service_healthy":
                assert target in healthy, f"{name} waits for {target}'s health, which has no healthcheck"
    for name in APP:
        assert {"mongodb", "rabbitmq", "redis", "minio-init"} <= set(services[name]["depends_on"]), name
    assert set(APP) - {"gateway", "transcode-worker"} <= set(services["gateway"]["depends_on"])

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        for target in services[name].get("depends_on", {}):
            visit(target, (*path, name))

    for name in services:
        visit(name, ())


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, str):  # SOURCE:TARGET[:MODE], or an anonymous TARGET
                source, kind = (volume.split(":")[0] if ":" in volume else None), "volume"
            else:
                source, kind = volume.get("source"), volume.get("type", "volume")
            if kind == "volume" and source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared under volumes:"
                used.add(source)
    assert used, "the stateful services keep their data in named volumes"
    assert declared == used, f"declared but unused: {declared - used}"
    for stateful, path in (("mongodb", "/data/db"), ("rabbitmq", "/var/lib/rabbitmq"), ("minio", "/data")):
        assert any(v.endswith(f":{path}") for v in compose["services"][stateful]["volumes"]), stateful


def test_transcode_worker_scales(compose):
    """`docker compose up --scale transcode-worker=4`: a fixed container name or host port would collide."""
    from services.config import Config

    worker = compose["services"]["transcode-worker"]
    assert "container_name" not in worker and "ports" not in worker and "network_mode" not in worker
    assert not any("container_name" in service for service in compose["services"].values())
    match = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    grace = int(worker.get("environment", {}).get(
        "WORKER_GRACE_SECONDS", next(f.default for f in dataclasses.fields(Config) if f.name == "worker_grace")))
    assert match and int(match.group(1)) > grace, "docker stop kills the worker before it can hand its job back"


def test_only_the_gateway_is_published(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            published = str(port)
            if name == "gateway":
                assert published.endswith(":8080")
            else:
                assert published.startswith("127.0.0.1:"), f"{name}: {published} is reachable from other hosts"


# --- configuration -------------------------------------------------------------------------------------------------
def test_each_app_service_gets_a_valid_configuration(compose):
    from services.config import Config

    services = compose["services"]
    for name in APP:
        env = {key: str(value) for key, value in services[name]["environment"].items()}
        # raises ConfigError on a malformed value, naming the variable (OPERATOR_ENV's signing key is a placeholder)
        config = Config.from_env({k: v for k, v in env.items() if k != "JWT_PRIVATE_KEY"})
        assert config.database_url.startswith("mongodb") and config.storage_url.startswith("s3://"), name
        assert config.broker_url.startswith("amqp://") and config.auth_url, name
        assert ("JWT_PRIVATE_KEY" in env) == (name == "auth-service"), f"{name}: only auth-service signs tokens"
        assert env["PLAYBACK_SECRET"] == OPERATOR_ENV["PLAYBACK_SECRET"], f"{name}: the shared playback secret"
        for url in (config.auth_url, config.upload_url, config.stream_url, config.notify_url):
            if url:
                target = urlsplit(url)
                exposed = re.findall(r"^EXPOSE\s+(\d+)", _dockerfile(services[target.hostname]), re.MULTILINE)
                assert str(target.port) in exposed, f"{name}: {url} is not a port {target.hostname} listens on"
        expected_trust = 0 if name in ("gateway", "transcode-worker") else 1
        assert config.trusted_proxies == expected_trust, f"{name}: TRUSTED_PROXIES"
    gateway = Config.from_env({k: str(v) for k, v in services["gateway"]["environment"].items()})
    assert all(gateway.service_urls().values()), "the gateway needs AUTH_URL, UPLOAD_URL, STREAM_URL, NOTIFY_URL"


def test_rabbitmq_user_and_consumer_timeout(compose):
    from services.adapters.rabbitmq_jobs import DEFAULT_CONSUMER_TIMEOUT_MS

    rabbitmq = compose["services"]["rabbitmq"]
    assert "management" in rabbitmq["image"]
    args = rabbitmq["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    match = re.search(r"-rabbit consumer_timeout (\d+)", args)
    assert match and int(match.group(1)) >= DEFAULT_CONSUMER_TIMEOUT_MS
    broker = urlsplit(compose["services"]["transcode-worker"]["environment"]["BROKER_URL"])
    # RabbitMQ lets `guest` log in from localhost only: the other containers need a user of their own
    assert broker.username == rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"] != "guest"
    assert broker.password == rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"]
    assert broker.hostname == "rabbitmq"


def test_minio_init_creates_the_configured_bucket(compose):
    from services.config import s3_bucket

    bucket = s3_bucket(compose["services"]["gateway"]["environment"]["STORAGE_URL"])
    script = " ".join(compose["services"]["minio-init"]["command"])
    assert f"mc mb --ignore-existing reelhouse/{bucket}" in script
    minio = compose["services"]["minio"]["environment"]
    worker = compose["services"]["transcode-worker"]["environment"]
    assert (worker["AWS_ACCESS_KEY_ID"], worker["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
