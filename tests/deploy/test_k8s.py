"""k8s/: every manifest validates against the Kubernetes schemas, and the deployment keeps its promises.

Schemas: kubernetes-validate (PyPI; ships the Kubernetes JSON schemas, "strict" variants reject unknown fields),
offline. KEDA's ScaledObject and TriggerAuthentication are custom resources with no schema in kubernetes-validate:
they are validated against schemas/keda-v1alpha1.schema.json, generated from the PyPI package cloudcoil-models-keda
(pydantic models generated from KEDA 2.16's published CRDs; see schemas/generate_keda_schema.py for how, and why that
package is not installed here), with unknown fields refused.

The manifests are built the way `kubectl apply -k` would (see conftest.py's build()), without kubectl.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP = ("gateway", "auth-service", "upload-service", "stream-service", "notify-service", "transcode-worker")
WEB = APP[:-1]  # every app Deployment but the worker serves HTTP traffic behind a Service
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
KEDA_SCHEMAS = Path(__file__).with_name("schemas") / "keda-v1alpha1.schema.json"


# --- schemas -------------------------------------------------------------------------------------------------------
def test_every_manifest_is_part_of_a_kustomization(kube):
    """A YAML file no kustomization lists is neither applied nor validated: k8s/ holds none (but the example
    Secret, which is deliberately in none, so that `kubectl apply -k` never overwrites the real one)."""
    listed = set()
    for directory in kube.KUSTOMIZATIONS:
        path = kube.K8S / directory
        spec = yaml.safe_load((path / "kustomization.yaml").read_text())
        listed |= {(path / entry).resolve() for entry in spec.get("resources") or []}
        listed.add((path / "kustomization.yaml").resolve())
    files = {path.resolve() for path in kube.K8S.rglob("*.y*ml")}
    assert files - listed == {kube.SECRET_EXAMPLE.resolve()}
    kustomizations = {path.parent.relative_to(kube.K8S).as_posix() for path in kube.K8S.rglob("kustomization.yaml")}
    assert kustomizations == set(kube.KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", ["base", "deps", "overlays/dev"])
def test_kustomization_builds(kube, directory):
    objects = kube.build(kube.K8S / directory)
    assert objects
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj
        if obj["kind"] not in kube.CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == "reelhouse", kube.label(obj)


def test_build_refuses_unsupported_kustomize_fields(kube, tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"
        "patches: [{path: p.yaml}]\n")
    with pytest.raises(kube.KustomizeError, match="patches"):
        kube.build(tmp_path)


def test_build_applies_images_like_kustomize(kube, tmp_path):
    """An operator's overlay: `images` retags the app, and what it does not name stays as it was."""
    (tmp_path / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{(kube.K8S / 'overlays' / 'dev').as_posix()}]\n"
        "images:\n"
        "  - {name: reelhouse/gateway, newName: registry.example.com/reelhouse/gateway, newTag: '1.2.3'}\n"
        "  - {name: reelhouse/transcode-worker, digest: 'sha256:" + "0" * 64 + "'}\n")
    objects = kube.build(tmp_path)
    image = {obj["metadata"]["name"]: next(kube.containers(obj))["image"]
             for obj in objects if obj["kind"] == "Deployment"}
    assert image["gateway"] == "registry.example.com/reelhouse/gateway:1.2.3"
    assert image["transcode-worker"] == "reelhouse/transcode-worker@sha256:" + "0" * 64
    assert image["auth-service"] == "reelhouse/auth-service:latest"
    assert image["redis"] == "redis:7.4-alpine"


def test_manifest_validates_against_kubernetes_schema(k8s_object, kubernetes_version):
    if k8s_object["kind"] in KEDA_KINDS:  # a custom resource: its schema comes from KEDA's CRD, not Kubernetes
        assert _keda_errors(k8s_object) == [], f"{k8s_object['kind']} does not match KEDA's CRD"
        return
    version = kubernetes_validate.latest_version() if kubernetes_version == "latest" else kubernetes_version
    try:
        kubernetes_validate.validate(k8s_object, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"Kubernetes {error.version} schema: {error.json_path}: {error.message}")


def _keda_validator(kind: str):
    import jsonschema

    schemas = json.loads(KEDA_SCHEMAS.read_text())
    schema = schemas[kind]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _keda_errors(obj: dict[str, Any]) -> list[str]:
    validator = _keda_validator(obj["kind"])
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(obj)]


def test_keda_resource_validates_against_its_crd(dev_objects):
    resources = [obj for obj in dev_objects if obj["kind"] in KEDA_KINDS]
    assert {obj["kind"] for obj in resources} == KEDA_KINDS
    for obj in resources:
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert _keda_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']} does not match KEDA's CRD"


def test_keda_check_catches_unknown_fields_missing_fields_and_wrong_types(dev_objects):
    """The KEDA check above can fail: a misspelt field, a missing required one, a string for an integer."""
    scaled = copy.deepcopy(next(obj for obj in dev_objects if obj["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicas"] = 20  # the field is maxReplicaCount
    scaled["spec"]["minReplicaCount"] = "1"
    del scaled["spec"]["triggers"][0]["type"]
    errors = "\n".join(_keda_errors(scaled))
    assert "'maxReplicas' was unexpected" in errors
    assert "$.spec.minReplicaCount" in errors
    assert "'type' is a required property" in errors


# --- Deployments ---------------------------------------------------------------------------------------------------
def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match and match.group(2) in {"", *units}, f"not a quantity: {text}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_deployment_has_probes_resources_and_a_locked_down_container(kube, dev_objects, deployment):
    spec = kube.pod_spec(deployment)
    name = deployment["metadata"]["name"]
    pod_security = spec.get("securityContext") or {}
    assert pod_security.get("runAsNonRoot") is True, f"{name}: pod securityContext.runAsNonRoot"
    volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
    for container in kube.containers(deployment):
        where = f"{name}/{container['name']}"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container.get(probe), f"{where}: no {probe}"
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in (resources.get(kind) or {}), f"{where}: no resources.{kind}.{resource}"
        for resource in resources["requests"]:
            assert _quantity(resources["requests"][resource]) <= _quantity(resources["limits"][resource]), \
                f"{where}: requests.{resource} above limits.{resource}"
        security = container.get("securityContext") or {}
        assert security.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
        assert security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts") or []}
        assert "/tmp" in mounts, f"{where}: /tmp is not mounted (the root filesystem is read-only)"
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


def test_deployment_has_a_service_account_and_a_service(kube, dev_objects, deployment):
    name = deployment["metadata"]["name"]
    spec = kube.pod_spec(deployment)
    account = spec.get("serviceAccountName")
    assert account, f"{name}: runs as the namespace's default ServiceAccount"
    kube.named(dev_objects, "ServiceAccount", account)
    assert spec.get("automountServiceAccountToken") is False, f"{name}: mounts an API token it does not need"
    if name == "transcode-worker":
        return  # a queue consumer: nothing connects to it
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [svc for svc in kube.of_kind(dev_objects, "Service")
                if kube.selects(svc["spec"].get("selector"), labels)]
    assert services, f"{name}: no Service selects its pods"
    ports = {port.get("name") for c in kube.containers(deployment) for port in c.get("ports") or []} | {
        port["containerPort"] for c in kube.containers(deployment) for port in c.get("ports") or []}
    for service in services:
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in ports, \
                f"Service {service['metadata']['name']}: targetPort {port.get('targetPort')} is no port of {name}"


def test_every_workload_selector_matches_its_pods(workload):
    selector = workload["spec"].get("selector", {}).get("matchLabels")
    if workload["kind"] == "Job":
        return
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector and all(labels.get(key) == value for key, value in selector.items())


def test_every_pod_meets_the_restricted_pod_security_standard(kube, dev_objects, workload):
    """The namespace enforces `restricted`: a pod that does not meet it would never start."""
    namespace = kube.named(dev_objects, "Namespace", "reelhouse")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = kube.pod_spec(workload)
    pod = spec.get("securityContext") or {}
    assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), kube.label(workload)
    assert all("hostPath" not in volume for volume in spec.get("volumes") or []), kube.label(workload)
    for container in kube.containers(workload):
        security = container.get("securityContext") or {}
        where = f"{kube.label(workload)}/{container['name']}"
        assert security.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        assert security.get("runAsUser", pod.get("runAsUser", 1)) != 0, f"{where}: runs as root"
        assert security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert not security.get("privileged"), f"{where}: privileged"
        assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped"
        seccomp = security.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        assert seccomp in ("RuntimeDefault", "Localhost"), f"{where}: seccompProfile"


def _dockerfile(name: str) -> str:
    return (ROOT / name / "Dockerfile").read_text()


def test_app_images_come_from_this_repository(kube, dev_objects):
    for name in APP:
        deployment = kube.named(dev_objects, "Deployment", name)
        (container,) = kube.pod_spec(deployment)["containers"]
        assert container["image"].split(":")[0] == f"reelhouse/{name}", f"{name}: image {container['image']}"
        exposed = {int(port) for port in re.findall(r"^EXPOSE\s+(\d+)", _dockerfile(name), re.MULTILINE)}
        declared = {port["containerPort"] for port in container["ports"]}
        assert declared == exposed, f"{name}: container ports {declared}, but {name}/Dockerfile exposes {exposed}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            assert port in (None, *declared, *(p.get("name") for p in container["ports"])), f"{name}: {probe} port"


# --- routing, autoscaling, disruption ------------------------------------------------------------------------------
def test_ingress_routes_api_socketio_and_the_rest(kube, dev_objects):
    routes: dict[str, tuple[str, Any]] = {}
    for ingress in kube.of_kind(dev_objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                routes[path["path"]] = (backend["name"], backend["port"].get("name") or backend["port"].get("number"))
                assert path["pathType"] == "Prefix", path
    assert routes["/api"][0] == "gateway"
    assert routes["/"][0] == "gateway"
    assert routes["/socket.io"][0] == "notify-service"
    for service_name, port in routes.values():
        service = kube.named(dev_objects, "Service", service_name)
        assert port in {p.get("name") for p in service["spec"]["ports"]} | {p["port"] for p in service["spec"]["ports"]}
    realtime = next(ing for ing in kube.of_kind(dev_objects, "Ingress")
                    if any(p["path"] == "/socket.io" for r in ing["spec"]["rules"] for p in r["http"]["paths"]))
    annotations = realtime["metadata"].get("annotations") or {}
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 600, \
            f"/socket.io: websockets need a long {timeout}"
    api = next(ing for ing in kube.of_kind(dev_objects, "Ingress")
               if any(p["path"] == "/api" for r in ing["spec"]["rules"] for p in r["http"]["paths"]))
    assert api["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0", "uploads"


def _autoscaled(dev_objects, kube) -> dict[str, str]:
    """Deployment name -> what scales it."""
    scaled = {}
    for hpa in kube.of_kind(dev_objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        scaled[target["name"]] = "HorizontalPodAutoscaler"
    for scaled_object in kube.of_kind(dev_objects, "ScaledObject"):
        scaled[scaled_object["spec"]["scaleTargetRef"]["name"]] = "ScaledObject"
    return scaled


def test_gateway_and_stream_scale_on_cpu(kube, dev_objects):
    for name in ("gateway", "stream-service"):
        (hpa,) = [h for h in kube.of_kind(dev_objects, "HorizontalPodAutoscaler")
                  if h["spec"]["scaleTargetRef"]["name"] == name]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    for name, scaler in _autoscaled(dev_objects, kube).items():
        deployment = kube.named(dev_objects, "Deployment", name)
        # with a fixed `replicas`, every `kubectl apply` would reset what the autoscaler chose
        assert "replicas" not in deployment["spec"], f"{name} is scaled by a {scaler} but sets replicas"


def test_pod_disruption_budgets(kube, dev_objects):
    budgets = kube.of_kind(dev_objects, "PodDisruptionBudget")
    for name in WEB:
        labels = kube.named(dev_objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        matching = [pdb for pdb in budgets if kube.selects(pdb["spec"]["selector"]["matchLabels"], labels)]
        assert matching, f"{name}: no PodDisruptionBudget"
        for pdb in matching:
            assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


# --- the worker: KEDA and its shutdown -----------------------------------------------------------------------------
def _configmap_env(kube, objects) -> dict[str, str]:
    return kube.named(objects, "ConfigMap", "reelhouse-config")["data"]


def test_keda_scales_the_worker_on_the_real_job_queues(kube, dev_objects, secret_example):
    from services.adapters.rabbitmq_jobs import RabbitJobQueue
    from services.ports.jobs import LANES

    namespace = _configmap_env(kube, dev_objects).get("BROKER_NAMESPACE", "reelhouse")
    queues = RabbitJobQueue("amqp://unused", namespace=namespace)  # connects lazily: nothing is opened here
    expected = {queues.queue_name(lane) for lane in LANES}
    (scaled,) = kube.of_kind(dev_objects, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment" and target["name"] == "transcode-worker"
    kube.named(dev_objects, "Deployment", "transcode-worker")
    assert scaled["spec"]["minReplicaCount"] == 1
    assert 1 < scaled["spec"]["maxReplicaCount"] <= 100
    triggers = scaled["spec"]["triggers"]
    assert {t["metadata"]["queueName"] for t in triggers} == expected
    for trigger in triggers:
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        assert metadata["mode"] == "QueueLength" and float(metadata["value"]) >= 1
        # Over AMQP, KEDA counts only ready messages: the jobs being transcoded would not count, and KEDA would
        # scale busy workers away (each handing its job back). The management API counts ready + unacked.
        assert metadata["protocol"] == "http" and metadata.get("excludeUnacknowledged", "false") == "false"
        auth = kube.named(dev_objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == secret_example["metadata"]["name"]
            assert ref["key"] in secret_example["stringData"], f"{ref['key']} is not in k8s/secret.example.yaml"
        assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"host"}


def _effective_env(kube, objects, container, secret_example) -> dict[str, str]:
    """The environment a container gets (the example Secret's values for its secretKeyRefs)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(kube.named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            pytest.fail(f"{container['name']}: envFrom {source}: give each secret key by name instead")
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret_example["metadata"]["name"]
            env[item["name"]] = secret_example["stringData"][ref["key"]]
    return env


def test_worker_has_time_to_hand_its_job_back(kube, dev_objects, secret_example):
    from services.config import Config

    deployment = kube.named(dev_objects, "Deployment", "transcode-worker")
    spec = kube.pod_spec(deployment)
    (container,) = spec["containers"]
    env = _effective_env(kube, dev_objects, container, secret_example)
    default = next(f.default for f in dataclasses.fields(Config) if f.name == "worker_grace")
    grace = int(env.get("WORKER_GRACE_SECONDS", default))
    # The preStop drains the worker (POST /drain on its health port): it returns once the running job finished or
    # was handed back, i.e. within the grace time; SIGTERM follows inside the same terminationGracePeriodSeconds.
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert f"http://127.0.0.1:{port}/drain" in hook[-1] and "method='POST'" in hook[-1], hook
    timeout = int(re.search(r"timeout=(\d+)", hook[-1]).group(1))
    assert grace < timeout < spec["terminationGracePeriodSeconds"], "the hook must outlast the grace, not the pod"
    margin = 10  # releasing the job and closing the connection after the grace period
    assert spec["terminationGracePeriodSeconds"] >= grace + margin, \
        f"the kubelet kills the worker before WORKER_GRACE_SECONDS ({grace} s) has run out"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    work = {v["name"]: v for v in spec["volumes"]}[mounts[env["WORK_DIR"]]]
    assert work["emptyDir"].get("sizeLimit"), "WORK_DIR: an emptyDir with a sizeLimit"


# --- configuration -------------------------------------------------------------------------------------------------
def _known_variables() -> set[str]:
    source = (ROOT / "services" / "config.py").read_text()
    return set(re.findall(r"""(?:env\.get\(|env\[|_int\(env, |_float\(env, )"([A-Z][A-Z0-9_]+)\"""", source))


def test_environment_is_known_complete_and_valid(kube, dev_objects, secret_example):
    """Every variable set is one services/config.py reads; each pod's environment passes Config's validation;
    the signing key reaches the auth service only, the playback secret every app pod."""
    from services.config import Config

    known = _known_variables()
    assert {"DATABASE_URL", "BROKER_URL", "WORKER_GRACE_SECONDS"} <= known  # the pattern still finds them
    unknown = set(_configmap_env(kube, dev_objects)) - known
    assert not unknown, f"reelhouse-config sets variables nothing reads: {unknown}"
    for name in APP:
        (container,) = kube.pod_spec(kube.named(dev_objects, "Deployment", name))["containers"]
        env = _effective_env(kube, dev_objects, container, secret_example)
        assert not set(env) - known, f"{name}: unknown variables {set(env) - known}"
        assert ("JWT_PRIVATE_KEY" in env) == (name == "auth-service"), f"{name}: JWT_PRIVATE_KEY"
        for required in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "PLAYBACK_SECRET", "AWS_SECRET_ACCESS_KEY"):
            assert required in env, f"{name}: {required} is not set"
        if name != "transcode-worker":
            assert env.get("RATE_LIMIT_STORAGE_URL", "").startswith("redis"), f"{name}: rate limits not shared"
            assert env.get("TRUSTED_PROXIES") == "1", f"{name}: behind the ingress, TRUSTED_PROXIES=1"
        # raises ConfigError, naming the variable, on a malformed value (the example's signing key is a placeholder)
        config = Config.from_env({k: v for k, v in env.items() if k != "JWT_PRIVATE_KEY"})
        assert config.database_url.startswith("mongodb") and config.storage_url.startswith("s3://")
        assert config.broker_url.startswith("amqp") and config.auth_url
    gateway = kube.named(dev_objects, "Deployment", "gateway")
    env = _effective_env(kube, dev_objects, kube.pod_spec(gateway)["containers"][0], secret_example)
    for variable, service in (("AUTH_URL", "auth-service"), ("UPLOAD_URL", "upload-service"),
                              ("STREAM_URL", "stream-service"), ("NOTIFY_URL", "notify-service")):
        port = kube.named(dev_objects, "Service", service)["spec"]["ports"][0]["port"]
        assert env[variable] == f"http://{service}:{port}", f"gateway: {variable}"


def test_secret_references_exist_and_base_ships_no_secret(kube, dev_objects, base_objects, secret_example):
    assert not kube.of_kind(base_objects, "Secret"), "kubectl apply -k k8s/base would overwrite the real Secret"
    assert secret_example["metadata"]["name"] == "reelhouse-secrets"
    for workload in (obj for obj in dev_objects if obj["kind"] in kube.WORKLOAD_KINDS):
        for container in kube.containers(workload):
            for item in container.get("env") or []:
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_example["stringData"], \
                        f"{kube.label(workload)}: {ref['key']} is not in k8s/secret.example.yaml"


# --- dependencies (k8s/deps) ---------------------------------------------------------------------------------------
def test_rabbitmq_consumer_timeout_outlasts_the_longest_job(kube, dev_objects):
    from services.adapters.rabbitmq_jobs import DEFAULT_CONSUMER_TIMEOUT_MS

    config = kube.named(dev_objects, "ConfigMap", "rabbitmq-config")
    (filename, text), = config["data"].items()
    values = dict(re.findall(r"^\s*([a-z_.]+)\s*=\s*(\S+)", text, re.MULTILINE))
    assert int(values["consumer_timeout"]) >= DEFAULT_CONSUMER_TIMEOUT_MS
    rabbitmq = kube.named(dev_objects, "StatefulSet", "rabbitmq")
    (container,) = kube.pod_spec(rabbitmq)["containers"]
    mounts = [m for m in container["volumeMounts"] if m.get("subPath") == filename]
    assert mounts and mounts[0]["mountPath"] == f"/etc/rabbitmq/conf.d/{filename}", "rabbitmq.conf is not mounted"
    assert "management" in container["image"], "KEDA reads the queue depth through the management plugin"


def test_bucket_job_creates_the_storage_url_bucket(kube, dev_objects):
    from services.config import s3_bucket

    bucket = s3_bucket(_configmap_env(kube, dev_objects)["STORAGE_URL"])
    job = kube.named(dev_objects, "Job", "minio-create-bucket")
    (container,) = kube.pod_spec(job)["containers"]
    script = " ".join(container["command"])
    assert f"mc mb --ignore-existing reelhouse/{bucket}" in " ".join(shlex.split(script.split("-c", 1)[1]))


def test_dependency_services_match_the_configured_urls(kube, dev_objects, secret_example):
    env = {**_configmap_env(kube, dev_objects), **secret_example["stringData"]}

    for variable in ("DATABASE_URL", "BROKER_URL", "RATE_LIMIT_STORAGE_URL", "S3_ENDPOINT_URL",
                     "RABBITMQ_MANAGEMENT_URL"):
        url = urlsplit(env[variable])
        service = kube.named(dev_objects, "Service", url.hostname)
        ports = {p["port"] for p in service["spec"]["ports"]}
        assert url.port in ports, f"{variable}: port {url.port} is not a port of Service {url.hostname}"
