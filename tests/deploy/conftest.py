"""Shared helpers for the deployment tests: a small `kustomize build` and lookups over Kubernetes objects.

There is no kubectl or kustomize binary on the CI machines (and none on PyPI that works offline), so `build()` does
what `kustomize build` does for the features k8s/ uses: `resources` (files with one or more YAML documents, and
directories holding a kustomization.yaml), `namespace`, and `images` (newName/newTag/digest, the way an operator's
overlay points the manifests at a registry, k8s/README.md). Any other field in a kustomization.yaml fails the build
instead of being ignored, so these tests never validate something other than what kubectl would apply: add support
here first when a kustomization needs more.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ("base", "deps", "overlays/dev")  # every kustomization under k8s/, by directory
SECRET_EXAMPLE = K8S / "secret.example.yaml"

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images"}
# Kinds without a namespace (the ones k8s/ uses, and a few it may grow into).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
                  "PersistentVolume", "IngressClass", "PriorityClass", "ClusterTriggerAuthentication"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class KustomizeError(ValueError):
    pass


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def build(directory: Path, _seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The objects `kustomize build DIRECTORY` emits (for the subset of kustomize described above)."""
    directory = directory.resolve()
    if directory in _seen:
        raise KustomizeError(f"{directory}: kustomizations include each other")
    kustomization = directory / "kustomization.yaml"
    if not kustomization.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    spec = yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}
    unsupported = set(spec) - SUPPORTED_FIELDS
    if unsupported:
        raise KustomizeError(f"{kustomization}: {sorted(unsupported)}: not supported by build() in tests/deploy")
    if spec.get("kind") != "Kustomization" or spec.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
        raise KustomizeError(f"{kustomization}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(build(target, (*_seen, directory)))
        elif target.is_file():
            if directory not in target.parents:
                # kustomize's default load restrictor: files must be inside the kustomization's directory
                raise KustomizeError(f"{kustomization}: {entry} is a file outside {directory}")
            objects.extend(copy.deepcopy(load_yaml_documents(target)))
        else:
            raise KustomizeError(f"{kustomization}: resource {entry} does not exist")
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    for image in spec.get("images") or []:
        for obj in objects:
            if obj.get("kind") in WORKLOAD_KINDS:
                for container in containers(obj):
                    container["image"] = _retag(container["image"], image)
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = object_id(obj)
        if key in seen:
            raise KustomizeError(f"{directory}: {key} is defined twice")
        seen.add(key)
    return objects


def _retag(reference: str, image: dict[str, str]) -> str:
    """kustomize's images transformer for one container image reference."""
    name, digest = reference.split("@", 1) if "@" in reference else (reference, None)
    last = name.rsplit("/", 1)[-1]
    name, tag = (name.rsplit(":", 1) if ":" in last else (name, None))
    if name != image["name"]:
        return reference
    name = image.get("newName", name)
    if image.get("digest"):
        return f"{name}@{image['digest']}"
    if image.get("newTag"):
        return f"{name}:{image['newTag']}"
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def object_id(obj: dict[str, Any]) -> tuple[str, str, str]:
    metadata = obj.get("metadata") or {}
    return obj.get("kind", "?"), metadata.get("namespace", ""), metadata.get("name", "?")


def label(obj: dict[str, Any]) -> str:
    kind, namespace, name = object_id(obj)
    return f"{kind}/{namespace + '/' if namespace else ''}{name}"


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def named(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert matches, f"no {kind} named {name!r}"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# Schema versions the manifests must validate against: the oldest Kubernetes they support (autoscaling/v2,
# policy/v1 and networking.k8s.io/v1 are all GA there) and the newest the pinned kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "latest")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize by object, so that a failure names the object (built from k8s/ at collection time)."""
    if "k8s_object" in metafunc.fixturenames:
        objects = build(K8S / "overlays" / "dev") + load_yaml_documents(SECRET_EXAMPLE)
        metafunc.parametrize("k8s_object", objects, ids=[label(obj) for obj in objects])
    if "deployment" in metafunc.fixturenames:
        deployments = of_kind(build(K8S / "overlays" / "dev"), "Deployment")
        metafunc.parametrize("deployment", deployments, ids=[obj["metadata"]["name"] for obj in deployments])
    if "workload" in metafunc.fixturenames:
        workloads = [obj for obj in build(K8S / "overlays" / "dev") if obj["kind"] in WORKLOAD_KINDS]
        metafunc.parametrize("workload", workloads, ids=[label(obj) for obj in workloads])
    if "kubernetes_version" in metafunc.fixturenames:
        metafunc.parametrize("kubernetes_version", KUBERNETES_VERSIONS)


@pytest.fixture(scope="session")
def kube():
    """These helpers, for the test modules (with --import-mode=importlib a conftest cannot be imported by name)."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def dev_objects() -> list[dict[str, Any]]:
    """Everything the dev overlay applies: the app (k8s/base) and its dependencies (k8s/deps)."""
    return build(K8S / "overlays" / "dev")


@pytest.fixture(scope="session")
def base_objects() -> list[dict[str, Any]]:
    return build(K8S / "base")


@pytest.fixture(scope="session")
def secret_example() -> dict[str, Any]:
    (secret,) = load_yaml_documents(SECRET_EXAMPLE)
    return secret
