"""The Kubernetes manifests hold the properties deploy/README.md promises (no cluster: parsed, not run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k2rl.sandboxes.cli import add_commands

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


@pytest.fixture(scope="module")
def pod() -> dict:
    (deployment,) = _docs("deployment.yaml")
    assert deployment["kind"] == "Deployment"
    return deployment["spec"]["template"]


def _server(pod) -> dict:
    (container,) = pod["spec"]["containers"]
    return container


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_container_is_locked_down(pod):
    spec, container = pod["spec"], _server(pod)
    assert spec["automountServiceAccountToken"] is False and spec["hostUsers"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True and context["capabilities"] == {"drop": ["ALL"]}
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and limits["cpu"] == requests["cpu"] and limits["memory"] == requests["memory"]
    for volume in spec["volumes"]:
        assert "hostPath" not in volume
        if "emptyDir" in volume:
            assert volume["emptyDir"]["sizeLimit"]


def test_token_comes_from_the_secret_and_the_server_flags_parse(pod):
    import argparse

    container = _server(pod)
    args = container["args"]
    token_path = Path(_flag(args, "--token-file"))
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (token_mount,) = [m for m in mounts.values() if token_path.parent == Path(m["mountPath"])]
    assert token_mount["readOnly"] is True
    (secret,) = _docs("secret.example.yaml")
    assert volumes[token_mount["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert token_path.name in secret["stringData"]
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["sandbox", "serve", *args])  # the manifest's flags are real flags
    assert parsed.host == "0.0.0.0" and parsed.backend == "local" and not parsed.insecure_loopback
    assert pod["spec"]["terminationGracePeriodSeconds"] > parsed.drain_timeout


def test_readiness_is_healthz_and_liveness_survives_a_drain(pod):
    container = _server(pod)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] in port
    assert "httpGet" not in container["livenessProbe"]  # /healthz is 503 while draining
    assert port["http"] == int(_flag(container["args"], "--port"))


def test_services_select_the_pods_and_network_policy_denies_egress(pod):
    labels = pod["metadata"]["labels"]
    for service in _docs("service.yaml"):
        assert service["kind"] == "Service"
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    (policy,) = _docs("networkpolicy.yaml")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert "Egress" in policy["spec"]["policyTypes"] and policy["spec"]["egress"] == []
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] and [p["port"] for p in rule["ports"]] == [8780]


def test_image_is_build_image_plus_the_server():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "FROM ${BASE}" in dockerfile and "sandbox\", \"serve\"" in dockerfile and "USER 65532" in dockerfile
    assert "sandbox build-image" in (DEPLOY / "build-server-image.sh").read_text()
