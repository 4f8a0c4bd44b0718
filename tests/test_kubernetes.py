"""deploy/kubernetes: valid for Kubernetes 1.33, checked by checkov, and consistent with the service it runs.

No cluster and no kustomize binary run here, so `build` renders a kustomization itself, for exactly the fields our
kustomizations use (anything else fails the test rather than being ignored): resources, labels, images, patches
(JSON 6902 ops on a kind/name target). The rendered documents then go through kubernetes-validate (strict, the
stated version's schemas) and checkov's Kubernetes checks, both from their own virtualenv (`make test`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from flask.testing import FlaskClient

from service.settings import Settings
from tests.test_stack_config import read_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy/kubernetes"
CHECKS = ROOT / ".venv-k8s/bin"
KUBERNETES_VERSION = "1.33.0"  # docs/scale.md and deploy/kubernetes/README.md state it
OVERLAYS = ["base", "overlays/example"]
_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "labels", "images", "patches"}
# checkov findings that stay, and why (anything else fails the test).
JUSTIFIED = {
    "CKV_K8S_43": "images are pinned to release tags, not digests: the digests cannot be resolved offline here, and "
    "the model image is built by its user; an overlay's `images:` adds `digest:`",
    "CKV_K8S_40": "the images' own users (10001, 999 for PostgreSQL's data directory) are kept, not an arbitrary "
    "high uid: the PostgreSQL image owns its data directory as 999",
}


def build(directory: Path) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize directory` renders, for the fields our kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - _KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: fields this renderer does not apply: {sorted(unsupported)}"
    documents: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            documents += build(path)
        else:
            documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    for label in kustomization.get("labels", []):
        assert label.get("includeSelectors") is False and not label.get("includeTemplates"), label
        for document in documents:
            document["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in kustomization.get("images", []):
        for container in _containers(documents):
            name, _, _tag = container["image"].rpartition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matches = [d for d in documents if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert len(matches) == 1, f"{directory}: patch target {target} matches {len(matches)} documents"
        for operation in yaml.safe_load(patch["patch"]):
            _apply(matches[0], operation)
    return documents


def _apply(document: dict[str, Any], operation: dict[str, Any]) -> None:
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if operation["op"] == "replace":
        assert last in node, f"replace of a missing {operation['path']}"
        node[last] = operation["value"]
    elif operation["op"] == "add" and isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), operation["value"])  # "-" appends
    elif operation["op"] == "add":
        node[last] = operation["value"]
    else:
        raise AssertionError(f"JSON patch op {operation['op']!r} is not applied by this renderer")


def _containers(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for document in documents:
        template = document.get("spec", {}).get("template", {})
        yield from template.get("spec", {}).get("containers", [])


def _one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], Path]:
    """(documents, a directory holding one file per document) for a kustomization."""
    documents = build(DEPLOY / request.param)
    directory = tmp_path_factory.mktemp(request.param.replace("/", "-"))
    for index, document in enumerate(documents):
        (directory / f"{index:02d}-{document['kind'].lower()}.yaml").write_text(yaml.safe_dump(document))
    return documents, directory


def _tool(name: str) -> str:
    path = CHECKS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: `make test` installs deploy/kubernetes/checks-requirements.txt there")
    return str(path)


class TestValid:
    def test_every_document_validates_strictly_against_kubernetes(self, rendered: tuple[list[Any], Path]) -> None:
        _, directory = rendered
        files = sorted(str(path) for path in directory.glob("*.yaml"))
        result = subprocess.run(
            [_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, "--quiet", *files],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    def test_checkov_findings_are_fixed_or_justified(self, rendered: tuple[list[Any], Path]) -> None:
        _, directory = rendered
        result = subprocess.run(
            [_tool("checkov"), "--directory", str(directory), "--framework", "kubernetes", "--output", "json",
             "--quiet", "--compact", "--skip-download"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        report = json.loads(result.stdout)
        failed = report["results"]["failed_checks"] if isinstance(report, dict) else []
        unjustified = sorted({f"{check['check_id']} {check['resource']}" for check in failed
                              if check["check_id"] not in JUSTIFIED})  # fmt: skip
        assert not unjustified, "checkov findings to fix or justify in JUSTIFIED:\n" + "\n".join(unjustified)
        assert report["summary"]["passed"] > 50  # the checks ran over the documents, not over nothing


class TestConsistentWithTheService:
    def test_the_settings_are_ones_the_service_accepts(self, rendered: tuple[list[Any], Path]) -> None:
        documents, _ = rendered
        data = _one(documents, "ConfigMap", "modellens-model")["data"]
        known = {f"MODELLENS_{field.upper()}" for field in Settings.__dataclass_fields__}
        assert {key for key in data if key.startswith("MODELLENS_")} <= known
        settings = Settings.from_env(data)  # raises, naming the variable, on a bad value
        assert str(settings.prediction_log_location).startswith("postgresql://")
        assert urlsplit(data["MODELLENS_PREDICTION_LOG"]).password is None  # libpq takes it from PGPASSWORD

    def test_probes_and_port_are_the_services(self, rendered: tuple[list[Any], Path], client: FlaskClient) -> None:
        documents, _ = rendered
        deployment = _one(documents, "Deployment", "modellens-model")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        data = _one(documents, "ConfigMap", "modellens-model")["data"]
        assert str(port) == data["MODELLENS_PORT"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert client.get(path).status_code == 200, f"{probe} {path}"
        # The database password: a file from the Secret, where MODELLENS_PREDICTION_LOG_PASSWORD_FILE points.
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["postgres-password"]["secret"]["secretName"] == "modellens-postgres"
        assert data["MODELLENS_PREDICTION_LOG_PASSWORD_FILE"] == mounts["postgres-password"] + "/password"
        assert not [e for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]

    def test_no_secret_is_committed(self, rendered: tuple[list[Any], Path]) -> None:
        documents, _ = rendered
        assert not [d for d in documents if d["kind"] == "Secret"]

    def test_images_are_the_ones_compose_pins(self, rendered: tuple[list[Any], Path]) -> None:
        documents, _ = rendered
        pins = read_env(ROOT / ".env")
        images = {container["name"]: container["image"] for container in _containers(documents)}
        assert images["collector"] == pins["OTELCOL_IMAGE"]
        if "postgres" in images:
            assert images["postgres"] == pins["POSTGRES_IMAGE"]

    def test_the_collector_pipelines_use_defined_components(self, rendered: tuple[list[Any], Path]) -> None:
        documents, _ = rendered
        config = yaml.safe_load(_one(documents, "ConfigMap", "modellens-collector")["data"]["config.yaml"])
        for name, pipeline in config["service"]["pipelines"].items():
            assert pipeline["processors"][0] == "memory_limiter", name
            for kind in ("receivers", "processors", "exporters"):
                assert set(pipeline[kind]) <= set(config[kind]), f"{name}: undefined {kind}"
        exporters = {name.split("/")[1]: spec["endpoint"] for name, spec in config["exporters"].items()}
        assert exporters["tempo"].startswith("tempo-distributor.")
        assert exporters["mimir"].endswith("/otlp") and exporters["loki"].endswith("/otlp")


def test_the_overlay_changes_what_it_says() -> None:
    base, overlay = build(DEPLOY / "base"), build(DEPLOY / "overlays/example")
    assert _one(overlay, "HorizontalPodAutoscaler", "modellens-model")["spec"]["minReplicas"] == 3
    assert _one(base, "HorizontalPodAutoscaler", "modellens-model")["spec"]["minReplicas"] == 2
    (model,) = [c for c in _containers(overlay) if c["name"] == "model"]
    assert model["image"] == "registry.example.com/ml/modellens-model:0.1.0"
    assert _one(overlay, "StatefulSet", "modellens-postgres")["spec"]["replicas"] == 1  # the reference server


def test_the_overlay_exposes_the_model_through_a_buffering_ingress_with_tokens() -> None:
    base, overlay = build(DEPLOY / "base"), build(DEPLOY / "overlays/example")
    assert not [d for d in base if d["kind"] == "Ingress"]
    assert _one(base, "Service", "modellens-model")["spec"].get("type", "ClusterIP") == "ClusterIP"
    ingress = _one(overlay, "Ingress", "modellens-model")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    body_limit = int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].removesuffix("m")) * 1024 * 1024
    assert body_limit > Settings().max_body_bytes  # the service's own 413 problem answers first
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    service = _one(overlay, "Service", "modellens-model")
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    assert path["backend"]["service"]["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    # Reachable from outside, so the writes need a token: the tokens file is the mounted Secret's `tokens` key.
    data = _one(overlay, "ConfigMap", "modellens-model")["data"]
    deployment = _one(overlay, "Deployment", "modellens-model")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tokens"]["secret"]["secretName"] == "modellens-tokens"
    assert (
        data["MODELLENS_AUTH_TOKENS_FILE"] == mounts["tokens"] + "/" + volumes["tokens"]["secret"]["items"][0]["path"]
    )
    assert "postgres-password" in mounts  # appended to the base's mounts, not in place of them
    assert Settings.from_env(data).auth_tokens_file is not None
