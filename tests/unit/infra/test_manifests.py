"""The deployment files agree with the code: commands, settings, ports, queue names.

Docker and a cluster do not run here, so these read infra/ as data: every YAML parses,
every container runs a real `orc` command, every `ORC_*` variable is a setting, the API
port and probes line up, the KEDA ScaledObjects watch the queues the topology declares,
and the compose services run the commands the README documents. Tools that check more
(`kubectl kustomize`, kubernetes-validate's schemas, hadolint) run when they are installed.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

from api.health import health
from common.settings import Settings
from common.states import TaskType
from common.topology import task_queue
from orc.cli import app

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
COMPOSE = INFRA / "compose.yaml"
DOCKERFILE = INFRA / "Dockerfile"
IMAGE = "orc-rust-ator"
QUEUES = {t.queue_suffix for t in TaskType}
SETTINGS = {f"ORC_{name.upper()}" for name in Settings.model_fields}
REQUIRED = {
    "ORC_DATABASE_URL",
    "ORC_BROKER_URL",
    "ORC_NAMESPACE",
    "ORC_STAGING_URL",
    "ORC_DATA_ROOT",
    "ORC_API_HOST",
    "ORC_API_PORT",
}
SECRET = {"ORC_DATABASE_URL", "ORC_BROKER_URL", "ORC_ADMIN_TOKEN", "ORC_SECRET_KEY"}
WORKLOADS = ("Deployment", "Job")


# libyaml's loader when PyYAML was built with it: several times faster.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(path.read_text(), Loader=LOADER) if d is not None]


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


@functools.cache
def _manifests() -> list[dict[str, Any]]:
    """Every Kubernetes document under infra/k8s (read once: tests only read them)."""
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _load(path)
    ]


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == kind}


def _one(kind: str, name: str) -> dict[str, Any]:
    return _of_kind(kind)[name]


def _config() -> dict[str, str]:
    return dict(_one("ConfigMap", "orc-config")["data"])


def _secret() -> dict[str, str]:
    return dict(_one("Secret", "orc-secrets")["stringData"])


def _containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    for kind in WORKLOADS:
        for name, doc in _of_kind(kind).items():
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield f"{kind}/{name}", pod, container


@functools.cache
def _compose() -> dict[str, Any]:
    (doc,) = _load(COMPOSE)
    return doc


def _engine_services() -> dict[str, dict[str, Any]]:
    return {
        name: s for name, s in _compose()["services"].items() if str(s.get("image", "")) == _image()
    }


def _image() -> str:
    return str(_compose()["x-orc"]["image"])


def _interpolated(value: object) -> str:
    """A compose value with `${VAR:-default}` replaced by its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    return {k: _interpolated(v) for k, v in service.get("environment", {}).items()}


@functools.cache
def _root_command() -> Any:
    return typer.main.get_command(app)


def _split_command(args: Sequence[str]) -> tuple[tuple[str, ...], Any, list[str]]:
    """The subcommand path of `orc ARGS`, its command object and the words after it."""
    command: Any = _root_command()
    rest = list(args)
    path: list[str] = []
    while getattr(command, "commands", None) is not None:
        assert rest, f"`orc {shlex.join(args)}` names no subcommand"
        name = rest.pop(0)
        assert name in command.commands, f"`orc {shlex.join(args)}`: no command {name!r}"
        command = command.commands[name]
        path.append(name)
    return tuple(path), command, rest


def _parse_orc(args: Sequence[str]) -> tuple[tuple[str, ...], dict[str, Any], set[str]]:
    """Parse `orc ARGS` as the CLI would, without running it.

    Returns the subcommand path, the parsed parameters and the option names used; an
    unknown command, option or bad value fails the test.
    """
    path, command, rest = _split_command(args)
    try:
        ctx = command.make_context(" ".join(path), rest)
    except Exception as exc:  # typer vendors click: its errors are not click's
        pytest.fail(f"`orc {shlex.join(args)}` does not parse: {exc}")
    return path, dict(ctx.params), {a for a in rest if a.startswith("-")}


def _check_orc_command(where: str, args: Sequence[str]) -> tuple[str, ...]:
    path, params, _ = _parse_orc(args)
    for queue in params.get("queue") or ():
        assert queue in QUEUES, f"{where}: --queue {queue} is not a task queue ({QUEUES})"
    return path


def _documented_commands() -> dict[tuple[str, ...], set[str]]:
    """Every `orc …` command line in the README's code blocks: its path and options.

    A line may hold alternatives (`orc api | orc scheduler`), optional parts in brackets
    and, after three spaces, a description.
    """
    readme = (ROOT / "README.md").read_text()
    documented: dict[tuple[str, ...], set[str]] = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.DOTALL):
        for line in block.splitlines():
            code = re.split(r"\s{3,}|\s#", line.strip())[0]
            for alternative in code.split(" | "):
                if not alternative.startswith("orc "):
                    continue
                words = shlex.split(re.sub(r"[\[\]]", "", alternative))
                path, _, rest = _split_command(words[1:])
                documented.setdefault(path, set()).update(w for w in rest if w.startswith("-"))
    return documented


# --- every file ------------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert _load(path)


def test_kustomization_lists_every_manifest_file() -> None:
    (kustomization,) = _load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == present
    assert [i["name"] for i in kustomization["images"]] == [IMAGE]


def test_resource_names_are_unique_per_kind() -> None:
    seen = [(d["kind"], d["metadata"]["name"]) for d in _manifests()]
    assert len(seen) == len(set(seen))


# --- settings ----------------------------------------------------------------------------


def test_every_orc_variable_is_a_setting() -> None:
    names: dict[str, set[str]] = {
        "ConfigMap": set(_config()),
        "Secret": set(_secret()),
        "Dockerfile": set(re.findall(r"\b(ORC_[A-Z_]+)=", DOCKERFILE.read_text())),
    }
    for name, service in _compose()["services"].items():
        names[f"compose {name}"] = set(service.get("environment", {}))
    for where, _, container in _containers():
        names[where] = {e["name"] for e in container.get("env", [])}
    for where, found in names.items():
        orc = {n for n in found if n.startswith("ORC_")}
        assert orc <= SETTINGS, f"{where}: {sorted(orc - SETTINGS)} are no Settings fields"


def test_config_and_secret_hold_every_needed_setting_once_and_it_validates() -> None:
    config, secret = _config(), _secret()
    assert not set(config) & set(secret)
    assert set(config) | set(secret) >= REQUIRED
    assert set(secret) == SECRET, "URLs with passwords and keys go in the Secret"
    values = {k.removeprefix("ORC_").lower(): v for k, v in {**config, **secret}.items()}
    settings = Settings(**values)
    assert settings.api_host == "0.0.0.0"


def test_every_container_takes_the_config_and_the_secret() -> None:
    for where, _, container in _containers():
        refs = {
            (kind, ref[kind]["name"])
            for ref in container["envFrom"]
            for kind in ("configMapRef", "secretRef")
            if kind in ref
        }
        assert refs == {("configMapRef", "orc-config"), ("secretRef", "orc-secrets")}, where


def test_compose_sets_every_needed_setting_and_its_urls_name_its_services() -> None:
    compose = _compose()
    env = {k: _interpolated(v) for k, v in compose["x-orc-env"].items()}
    assert REQUIRED | {"ORC_ADMIN_TOKEN", "ORC_SECRET_KEY"} <= set(env)
    Settings(**{k.removeprefix("ORC_").lower(): v for k, v in env.items()})
    for name, service in _engine_services().items():
        assert _compose_env(service) == env, name
    db = urlsplit(env["ORC_DATABASE_URL"])
    pg = compose["services"]["postgres"]["environment"]
    assert db.scheme == "postgresql+asyncpg"
    assert (db.hostname, db.port, db.username, db.password, db.path) == (
        "postgres",
        5432,
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        "/" + pg["POSTGRES_DB"],
    )
    broker = urlsplit(env["ORC_BROKER_URL"])
    rabbit = compose["services"]["rabbitmq"]["environment"]
    assert (broker.hostname, broker.port, broker.username, broker.password) == (
        "rabbitmq",
        5672,
        rabbit["RABBITMQ_DEFAULT_USER"],
        rabbit["RABBITMQ_DEFAULT_PASS"],
    )
    assert env["ORC_NAMESPACE"] == _config()["ORC_NAMESPACE"]


# --- commands ----------------------------------------------------------------------------


def test_every_container_runs_a_real_orc_command() -> None:
    paths = set()
    for where, _, container in _containers():
        assert container["image"] == IMAGE, where
        assert container.get("command") in (None, ["orc"]), where
        paths.add(_check_orc_command(where, container["args"]))
    assert {("api",), ("scheduler",), ("coordinator",), ("worker",), ("db", "upgrade")} <= paths


def test_every_compose_service_runs_a_real_orc_command_the_readme_documents() -> None:
    documented = _documented_commands()
    assert ("worker",) in documented, "the README documents no `orc worker` line"
    services = _engine_services()
    assert {"migrate", "api", "scheduler", "coordinator"} <= set(services)
    for name, service in services.items():
        assert "entrypoint" not in service, name
        command = service["command"]
        path, _, options = _parse_orc(command)
        _check_orc_command(f"compose {name}", command)
        assert path in documented, f"compose {name}: `orc {' '.join(path)}` is not in README"
        assert options <= documented[path], f"compose {name}: {options - documented[path]}"


def test_one_worker_deployment_and_one_worker_service_per_task_queue() -> None:
    k8s = {
        tuple(_parse_orc(c["args"])[1]["queue"])
        for _, _, c in _containers()
        if _parse_orc(c["args"])[0] == ("worker",)
    }
    compose = {
        tuple(_parse_orc(s["command"])[1]["queue"])
        for s in _engine_services().values()
        if _parse_orc(s["command"])[0] == ("worker",)
    }
    assert k8s == compose == {(q,) for q in QUEUES}


def test_the_image_defaults_to_orc_up_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "a multi-stage build"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    assert all(base == "${PYTHON_IMAGE}" for base, _ in stages)
    assert re.findall(r"^ENTRYPOINT (.+)$", text, flags=re.MULTILINE) == ['["orc"]']
    (cmd,) = re.findall(r"^CMD (.+)$", text, flags=re.MULTILINE)
    assert _check_orc_command("Dockerfile CMD", yaml.safe_load(cmd)) == ("up",)
    (user,) = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    uid = int(user.split(":")[0])
    assert uid != 0
    for where, pod, _ in _containers():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == uid, where


def test_the_image_holds_every_package_and_the_context_lets_them_in() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    text = DOCKERFILE.read_text()
    copied = {
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
        for src in line.split()[:-1]
        if not src.startswith("--")
    }
    assert packages <= copied
    assert {"pyproject.toml", "README.md"} <= copied
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert copied <= allowed, "the root .dockerignore keeps a copied path out of the context"


# --- ports and probes --------------------------------------------------------------------


def test_api_port_and_probes_agree_everywhere() -> None:
    port = int(_config()["ORC_API_PORT"])
    (path,) = health.paths
    deployment = _one("Deployment", "api")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert named.get(get["port"], get["port"]) == port, probe
    (service_port,) = _one("Service", "api")["spec"]["ports"]
    assert named.get(service_port["targetPort"], service_port["targetPort"]) == port
    api = _compose()["services"]["api"]
    assert int(_compose_env(api)["ORC_API_PORT"]) == port
    assert [int(p.rsplit(":", 1)[1]) for p in api["ports"]] == [port]
    assert api["healthcheck"]["test"] == ["CMD", "orc-healthcheck", "api"]
    exposed = re.findall(r"^EXPOSE (\d+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert exposed == [str(Settings.model_fields["api_port"].default)]


def _healthcheck_targets() -> set[str]:
    spec = importlib.util.spec_from_file_location("healthcheck", INFRA / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.CHECKS)


def test_every_deployment_has_probes_resources_and_a_locked_down_container() -> None:
    targets = _healthcheck_targets()
    for name, deployment in _of_kind("Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            probe = container["readinessProbe"]
            if "exec" in probe:
                command = probe["exec"]["command"]
                assert command[0] == "orc-healthcheck", name
                assert command[1:] and set(command[1:]) <= targets, name
            else:
                assert container["livenessProbe"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name


def test_every_long_running_compose_service_has_a_health_check() -> None:
    targets = _healthcheck_targets()
    for name, service in _compose()["services"].items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if test[1] == "orc-healthcheck":
            assert set(test[2:]) <= targets, name


# --- selectors, budgets, volumes ---------------------------------------------------------


def _pod_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def test_selectors_match_the_pods_they_mean() -> None:
    deployments = _of_kind("Deployment")
    for name, deployment in deployments.items():
        assert (
            deployment["spec"]["selector"]["matchLabels"].items() <= _pod_labels(deployment).items()
        ), name
    service = _one("Service", "api")["spec"]["selector"]
    assert service.items() <= _pod_labels(deployments["api"]).items()
    budgets = _of_kind("PodDisruptionBudget")
    assert set(budgets) == {"api"} | {f"worker-{q}" for q in QUEUES}
    for name, budget in budgets.items():
        matched = [
            d
            for d, deployment in deployments.items()
            if budget["spec"]["selector"]["matchLabels"].items() <= _pod_labels(deployment).items()
        ]
        assert matched == [name]


def test_workers_share_staging_and_data_where_the_settings_point() -> None:
    config = _config()
    claims = {d["metadata"]["name"] for d in _manifests() if d["kind"] == "PersistentVolumeClaim"}
    for where, pod, container in _containers():
        if _parse_orc(container["args"])[0] != ("worker",):
            continue
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        for setting in ("ORC_STAGING_URL", "ORC_DATA_ROOT"):
            claim = mounts[config[setting]]["persistentVolumeClaim"]["claimName"]
            assert claim in claims, where
    compose = _compose()
    for name, service in _engine_services().items():
        if _parse_orc(service["command"])[0] != ("worker",):
            continue
        env = _compose_env(service)
        mounted = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        for setting in ("ORC_STAGING_URL", "ORC_DATA_ROOT"):
            assert mounted[env[setting]] in compose["volumes"], name
        assert int(service["deploy"]["replicas"]) >= 1, name


def test_compose_runs_rabbitmq_with_its_ui_and_postgresql_16() -> None:
    services = _compose()["services"]
    assert re.fullmatch(r"rabbitmq:3[.\d]*-management", services["rabbitmq"]["image"])
    assert any(p.endswith(":15672") for p in services["rabbitmq"]["ports"])
    assert re.fullmatch(r"postgres:16[.\d]*(-\w+)?", services["postgres"]["image"])
    for name in ("api", "scheduler", "coordinator"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["rabbitmq"]["condition"] == "service_healthy", name
    assert _parse_orc(services["migrate"]["command"])[0] == ("db", "upgrade")


# --- KEDA ----------------------------------------------------------------------------------


def test_a_scaled_object_per_task_queue_watches_the_topologys_queue() -> None:
    namespace = _config()["ORC_NAMESPACE"]
    assert task_queue(namespace, "extract") == task_queue("orc", "extract")
    deployments = _of_kind("Deployment")
    auths = _of_kind("TriggerAuthentication")
    watched = set()
    for name, scaled in _of_kind("ScaledObject").items():
        spec = scaled["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        path, params, _ = _parse_orc(container["args"])
        assert path == ("worker",), name
        (queue,) = params["queue"]
        assert "replicas" not in target["spec"], f"{name}: KEDA owns the replica count"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq", name
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata are strings"
        assert metadata["queueName"] == task_queue(namespace, queue), name
        assert metadata["mode"] == "QueueLength", name
        assert int(metadata["value"]) > 0, name
        assert "host" not in metadata, f"{name}: the broker URL comes from the Secret"
        auth = auths[trigger["authenticationRef"]["name"]]
        (ref,) = auth["spec"]["secretTargetRef"]
        assert (ref["parameter"], ref["name"], ref["key"]) == (
            "host",
            "orc-secrets",
            "ORC_BROKER_URL",
        )
        watched.add(metadata["queueName"])
    assert watched == {task_queue(namespace, q) for q in QUEUES}


# --- tools, when installed -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_resource_with_the_image_set() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.load_all(built, Loader=LOADER) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in _manifests()
    )
    (kustomization,) = _load(K8S / "kustomization.yaml")
    (image,) = kustomization["images"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == IMAGE
        if doc["kind"] in WORKLOADS:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert container["image"] == f"{image['newName']}:{image['newTag']}"


def test_core_manifests_pass_the_kubernetes_schemas() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    for doc in _manifests():
        if "." in doc["apiVersion"].split("/")[0]:
            continue  # a custom resource (KEDA): no schema ships for it
        validate.validate(doc, "1.30.0", strict=True)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        ["hadolint", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_component_probes_use_the_ops_endpoint_on_the_metrics_port() -> None:
    """Every non-API container is probed on /healthz and /readyz on ORC_METRICS_PORT, the
    port `common.ops_server` listens on when that setting is given."""
    port = int(_config()["ORC_METRICS_PORT"])
    for name, _workload, container in _containers():
        if container.get("args", [None])[0] not in ("scheduler", "coordinator", "worker"):
            continue
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports.get("metrics") == port, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
