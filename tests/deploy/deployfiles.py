"""Readers for the files in deploy/: the Dockerfile, the compose file, the Kubernetes
manifests, the Prometheus and Grafana configuration."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "clv-streamer.json"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "clv-streamer.yml"

#: Files in deploy/ that are neither YAML, JSON nor the Dockerfile (and so only read as text).
TEXT_FILES = {"README.md", "Dockerfile.dockerignore"}


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def load_yaml_documents(path: Path) -> list[Any]:
    with open(path, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def load_yaml(path: Path) -> Any:
    (doc,) = load_yaml_documents(path)
    return doc


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the (joined) line
    line: int


DOCKERFILE_KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped.
    Raises ValueError on an unknown instruction."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        if keyword.upper() not in DOCKERFILE_KEYWORDS:
            raise ValueError(f"{path.name}:{start}: unknown instruction {keyword!r}")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if pending:
        raise ValueError(f"{path.name}: ends inside a continued line")
    return out


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        parts = shlex.split(ins.args)
        if parts and "=" not in parts[0]:  # legacy form: ENV NAME value with spaces
            env[parts[0]] = " ".join(parts[1:])
            continue
        for part in parts:
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"Dockerfile line {ins.line}: ENV item {part!r} is not NAME=value")
            env[name] = value
    return env


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT/VOLUME in JSON (exec) form, or the shell words otherwise."""
    args = args.strip()
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
        return value
    return shlex.split(args)


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Build-context paths of the COPY instructions (no --from copies)."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        words = [w for w in shlex.split(ins.args)]
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


# --- compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {name: value for name, _, value in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def is_app_service(service: dict[str, Any]) -> bool:
    """A service that runs clv-streamer (built from deploy/Dockerfile)."""
    build = service.get("build")
    return isinstance(build, dict) and str(build.get("dockerfile", "")).endswith("Dockerfile") and "clv-streamer" in str(service.get("image", ""))


def container_ports(service: dict[str, Any]) -> list[int]:
    """The container side of each ``ports`` entry ("host:container", "container", long form)."""
    out: list[int] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append(int(entry["target"]))
        else:
            out.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return out


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of short-syntax volumes whose source is a path."""
    out = []
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if not source.startswith((".", "/")):
            out.append((source, target))
    return out


# --- Kubernetes ---------------------------------------------------------------------------


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml")):
        for doc in load_yaml_documents(path):
            docs.append((path, doc))
    return docs


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc.get("kind") == kind]


def k8s_object(kind: str) -> dict[str, Any]:
    (obj,) = k8s_objects(kind)
    return obj
