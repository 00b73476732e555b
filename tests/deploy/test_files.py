"""deploy/: every file parses, the Dockerfile builds the package and runs `streamer worker`
as a non-root user, the compose stack and the Kubernetes manifests hang together, and every
environment variable and port they give the app is one the app knows."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from streamer.errors import ConfigError
from streamer.settings import SETTINGS_DOC, load
from tests.deploy.deployfiles import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    GRAFANA_DASHBOARD_PROVIDERS,
    GRAFANA_DATASOURCES,
    K8S,
    PROMETHEUS_CONFIG,
    ROOT,
    TEXT_FILES,
    bind_mounts,
    compose,
    container_ports,
    copy_sources,
    dockerfile_env,
    dockerfile_instructions,
    exec_form,
    is_app_service,
    k8s_documents,
    k8s_object,
    k8s_objects,
    load_json,
    load_yaml,
    load_yaml_documents,
    named_volumes,
    service_env,
)

#: Variables that are not the app's, per place: the image's Python/pip switches and the
#: third-party images' own settings. Everything else must be in streamer.settings.SETTINGS_DOC.
ALLOWED_ENV: dict[str, set[str]] = {
    # The downward API's pod name, from which WEB_ADVERTISED_URL is made.
    "k8s:clv-streamer": {"POD_NAME"},
    "Dockerfile": {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"},
    # apache/kafka image: KAFKA_* become server.properties entries; CLUSTER_ID formats storage.
    "compose:kafka": {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
        "KAFKA_LOG_DIRS",
    },
    # grafana/grafana image: GF_<section>_<key> settings.
    "compose:grafana": {"GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD", "GF_USERS_ALLOW_SIGN_UP", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"},
    "compose:prometheus": set(),
}


# --- (a) every file parses ----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p for p in DEPLOY.rglob("*") if p.is_file()), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_file_parses(path: Path) -> None:
    if path.suffix in (".yml", ".yaml"):
        documents = load_yaml_documents(path)
        assert documents, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in documents), f"{path}: every document must be a mapping"
    elif path.suffix == ".json":
        assert isinstance(load_json(path), dict)
    elif path.suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    elif path == DOCKERFILE:
        assert dockerfile_instructions(path)[0].keyword == "FROM"
    else:
        assert path.name in TEXT_FILES, f"{path}: unknown kind of file in deploy/ (add a parser to this test or to TEXT_FILES)"
        path.read_text(encoding="utf-8")


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_installs_the_package_and_runs_the_worker_as_non_root() -> None:
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for ins in instructions:
        by_keyword.setdefault(ins.keyword, []).append(ins.args)
    assert by_keyword["FROM"] == ["python:3.11-slim"]
    assert any("pip install" in run for run in by_keyword["RUN"])
    user = by_keyword["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), "the worker must not run as root"
    assert exec_form(by_keyword["ENTRYPOINT"][-1]) + exec_form(by_keyword["CMD"][-1]) == ["streamer", "worker"]
    env = dockerfile_env(instructions)
    assert env["WEB_HOST"] == "0.0.0.0", "in a container the web server must listen beyond loopback"
    assert env["STORE"] == "rocksdb"
    volumes = [v for args in by_keyword["VOLUME"] for v in exec_form(args)]
    assert env["DATA_DIR"] in volumes, "DATA_DIR must be a volume"
    assert "HEALTHCHECK" in by_keyword and "/healthz" in by_keyword["HEALTHCHECK"][0]


def test_dockerfile_copies_exist_and_are_not_ignored() -> None:
    sources = copy_sources(dockerfile_instructions())
    assert sources
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    reincluded = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context (repository root)"
        assert source.rstrip("/") in reincluded, f"COPY {source} is excluded by Dockerfile.dockerignore"


def test_the_copied_files_alone_build_a_wheel_with_the_schemas_and_the_command(tmp_path: Path) -> None:
    """What `pip install /src` in the image gets: only the COPY sources (no Docker here)."""
    src = tmp_path / "src"
    src.mkdir()
    for source in copy_sources(dockerfile_instructions()):
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, src / source.rstrip("/"), symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / origin.name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    schemas = {p.name for p in (ROOT / "schemas").glob("*.json")}
    assert schemas and schemas <= {Path(n).name for n in names if n.startswith("streamer/schemas/")}
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "streamer = streamer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# --- compose ------------------------------------------------------------------------------


def app_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if is_app_service(svc)}


def test_compose_runs_kafka_in_kraft_mode_and_two_rocksdb_workers() -> None:
    spec = compose()
    services = spec["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    kafka_env = service_env(kafka)
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("zookeeper" in name for name in services), "KRaft: no ZooKeeper"
    workers = app_services()
    assert len(workers) == 2
    advertised = {item.split("://", 1)[1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    volumes_used = []
    for name, worker in workers.items():
        env = service_env(worker)
        assert env["STORE"] == "rocksdb", name
        for server in env["KAFKA_BOOTSTRAP"].split(","):
            host = server.split(":")[0]
            assert host in services, f"{name}: KAFKA_BOOTSTRAP host {host} is not a compose service"
            assert server in advertised, f"{name}: {server} is not an advertised listener of kafka"
        mounts = dict((target, source) for source, target in named_volumes(worker))
        assert env["DATA_DIR"] in mounts, f"{name}: DATA_DIR {env['DATA_DIR']} is not on a volume"
        assert mounts[env["DATA_DIR"]] in spec["volumes"], f"{name}: volume {mounts[env['DATA_DIR']]} not declared"
        volumes_used.append(mounts[env["DATA_DIR"]])
        assert "kafka" in worker["depends_on"]
        build = worker["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert len(set(volumes_used)) == len(volumes_used), "each worker needs its own RocksDB volume"
    assert len({service_env(w)["STREAMER_APP_ID"] for w in workers.values()}) == 1, "one consumer group"


def test_compose_mounts_the_prometheus_and_grafana_files() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for source, _target in bind_mounts(service):
            assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} does not exist"
    prometheus = services["prometheus"]
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    mounts = {target: source for source, target in bind_mounts(prometheus)}
    config_dir, config_name = config_path.rsplit("/", 1)
    assert (COMPOSE.parent / mounts[config_dir]).resolve() / config_name == PROMETHEUS_CONFIG
    grafana_mounts = {target: (COMPOSE.parent / source).resolve() for source, target in bind_mounts(services["grafana"])}
    assert grafana_mounts["/etc/grafana/provisioning"] == GRAFANA_DATASOURCES.parent.parent
    (provider,) = load_yaml(GRAFANA_DASHBOARD_PROVIDERS)["providers"]
    dashboards_dir = grafana_mounts[provider["options"]["path"]]
    assert (dashboards_dir / "clv-streamer.json").is_file()
    (datasource,) = load_yaml(GRAFANA_DATASOURCES)["datasources"]
    host_port = datasource["url"].split("://", 1)[1]
    host, port = host_port.split(":")
    assert host == "prometheus" and int(port) in container_ports(prometheus)


# --- Kubernetes ---------------------------------------------------------------------------


def test_every_k8s_file_is_in_the_kustomization() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == files
    for path, doc in k8s_documents():
        if path.name != "kustomization.yaml":
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path


def worker_container(statefulset: dict[str, Any]) -> dict[str, Any]:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps, then env entries (the optional Secret
    is the operator's to create, so it adds nothing here)."""
    env: dict[str, str] = {}
    configmaps = {cm["metadata"]["name"]: cm for cm in k8s_objects("ConfigMap")}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            assert source["secretRef"].get("optional") is True, "the manifests must apply without the Secret"
            continue
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom ConfigMap {name} is not in deploy/k8s"
        env.update({k: str(v) for k, v in configmaps[name]["data"].items()})
    for entry in container.get("env", []):
        env[entry["name"]] = str(entry.get("value", ""))
    return env


def test_statefulset_keeps_rocksdb_on_a_volume_claim_template() -> None:
    sts = k8s_object("StatefulSet")
    spec = sts["spec"]
    container = worker_container(sts)
    env = container_env(container)
    assert env["STORE"] == "rocksdb"
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(env["DATA_DIR"]) in claims, "DATA_DIR must be on a volumeClaimTemplate"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod_security = spec["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert container["args"] == ["worker"]
    service = k8s_object("Service")
    assert spec["serviceName"] == service["metadata"]["name"]


def test_each_pod_advertises_its_stable_dns_name_to_the_others() -> None:
    """The query API forwards a request to the worker that owns the customer, at the URL that
    worker advertises: on Kubernetes <pod>.<headless service>:<web port>, the pod's own name
    coming from the downward API (the default, the bare host name, does not resolve)."""
    (sts,) = k8s_objects("StatefulSet")
    (service,) = k8s_objects("Service")
    assert service["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == service["metadata"]["name"]
    entries = {entry["name"]: entry for entry in worker_container(sts)["env"]}
    assert entries["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    names = list(entries)
    assert names.index("POD_NAME") < names.index("WEB_ADVERTISED_URL")  # $(VAR) sees only earlier entries
    port = web_port(container_env(worker_container(sts)))
    assert entries["WEB_ADVERTISED_URL"]["value"] == f"http://$(POD_NAME).{service['metadata']['name']}:{port}"


def test_service_and_servicemonitor_reach_the_metrics_port() -> None:
    sts = k8s_object("StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = k8s_object("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") == "/metrics"
    # The alert rules select job="clv-streamer": the operator names the job after the Service.
    assert "jobLabel" not in monitor["spec"] and service["metadata"]["name"] == "clv-streamer"
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# --- (b) environment variables and ports --------------------------------------------------


def env_by_place() -> dict[str, tuple[dict[str, str], bool]]:
    """place -> (environment, runs the app)."""
    places: dict[str, tuple[dict[str, str], bool]] = {"Dockerfile": (dockerfile_env(dockerfile_instructions()), True)}
    for name, service in compose()["services"].items():
        places[f"compose:{name}"] = (service_env(service), is_app_service(service))
    for sts in k8s_objects("StatefulSet"):
        places[f"k8s:{sts['metadata']['name']}"] = (container_env(worker_container(sts)), True)
    for cm in k8s_objects("ConfigMap"):
        places[f"k8s:configmap/{cm['metadata']['name']}"] = ({k: str(v) for k, v in cm["data"].items()}, True)
    return places


def test_every_environment_variable_is_a_documented_setting_or_allow_listed() -> None:
    unknown = {}
    for place, (env, is_app) in env_by_place().items():
        allowed = set(SETTINGS_DOC) | ALLOWED_ENV.get(place, set())
        if not is_app:
            assert place in ALLOWED_ENV, f"{place}: a service that is not the app needs an ALLOWED_ENV entry"
        extra = set(env) - allowed
        if extra:
            unknown[place] = sorted(extra)
    assert not unknown, f"not in streamer.settings.SETTINGS_DOC nor allow-listed: {unknown}"


def test_allow_lists_name_no_app_setting() -> None:
    # An app variable set on a non-app service would be a misplaced setting, not an allowance.
    for place, names in ALLOWED_ENV.items():
        assert not names & set(SETTINGS_DOC), place


@pytest.mark.parametrize("place", [p for p, (_, is_app) in env_by_place().items() if is_app])
def test_app_environment_loads(place: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values are valid too: the app's own settings loader accepts them (image defaults first)."""
    env, _ = env_by_place()[place]
    image_env = dockerfile_env(dockerfile_instructions())
    for name in SETTINGS_DOC:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**image_env, **env}.items():
        if name in SETTINGS_DOC:
            monkeypatch.setenv(name, value)
    try:
        settings = load()
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{place}: {exc}")
    assert settings.kafka_bootstrap or place == "Dockerfile", f"{place}: KAFKA_BOOTSTRAP is not set"
    assert settings.store == "rocksdb"


def web_port(env: dict[str, str]) -> int:
    image_env = dockerfile_env(dockerfile_instructions())
    return int(env.get("WEB_PORT", image_env.get("WEB_PORT", SETTINGS_DOC["WEB_PORT"][0])))


def test_dockerfile_exposes_the_web_port() -> None:
    instructions = dockerfile_instructions()
    exposed = {int(p.split("/")[0]) for ins in instructions if ins.keyword == "EXPOSE" for p in ins.args.split()}
    assert exposed == {web_port(dockerfile_env(instructions))}


def test_compose_ports_and_scrape_targets_are_the_web_port() -> None:
    services = compose()["services"]
    ports = {}
    for name, service in app_services().items():
        port = web_port(service_env(service))
        ports[name] = port
        assert container_ports(service) == [port], f"{name}: published container ports must be WEB_PORT {port}"
    scrape = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "clv-streamer"]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert sorted(t.split(":")[0] for t in targets) == sorted(ports), "Prometheus must scrape every worker"
    for target in targets:
        host, port = target.split(":")
        assert host in services and int(port) == ports[host], f"scrape target {target} is not {host}'s WEB_PORT"


def test_k8s_ports_are_the_web_port() -> None:
    sts = k8s_object("StatefulSet")
    container = worker_container(sts)
    port = web_port(container_env(container))
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(named.values()) == {port}

    def resolve(value: int | str) -> int:
        return named[value] if isinstance(value, str) else int(value)

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert resolve(container[probe]["httpGet"]["port"]) == port, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for service_port in k8s_object("Service")["spec"]["ports"]:
        assert resolve(service_port["targetPort"]) == port


def test_secrets_come_from_a_secret_never_from_the_configmap() -> None:
    """API_TOKEN and the SASL credentials are loaded from the Secret clv-streamer-secrets; the
    ConfigMap (readable by anyone who may read the namespace's config) carries none of them."""
    container = worker_container(k8s_object("StatefulSet"))
    refs = [source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source]
    assert refs == ["clv-streamer-secrets"]
    (configmap,) = k8s_objects("ConfigMap")
    assert not {"API_TOKEN", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} & configmap["data"].keys()
    assert "clv-streamer-secrets" in (DEPLOY / "README.md").read_text()
