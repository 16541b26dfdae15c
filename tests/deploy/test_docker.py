"""docker/: the Dockerfile and compose.yaml, checked without a container engine.

These machines have no Docker daemon and no registry, so nothing here builds or runs a
container (docs/DEPLOY.md). Instead the compose file is validated against the Compose
Specification's own JSON schema (compose-spec.json, vendored from github.com/compose-spec/
compose-spec, schema/compose-spec.json at 170098ba, Apache-2.0) and its references resolved;
the Dockerfile is parsed with dockerfile-parse. What the containers run is run as plain
processes elsewhere: `manage.py serve` and nginx with this configuration (test_routing.py,
test_failover.py), the entry point and the health check (below and test_routing.py).
"""

import json
import os
import shlex
import stat
import subprocess
import sys

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests import live

ROOT = live.ROOT
DOCKER = ROOT / "docker"
SCHEMA = json.loads((ROOT / "tests" / "deploy" / "compose-spec.json").read_text())
APPS = ("app1", "app2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(DOCKER / "Dockerfile"), cache_content=True)
    parser.content = (DOCKER / "Dockerfile").read_text()
    return parser


def schema_errors(document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(
        SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


# -- compose.yaml ------------------------------------------------------------------------------


def test_compose_follows_the_compose_specification(compose):
    assert schema_errors(compose) == []


def test_the_schema_check_can_fail(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["nginx"]["depends_on"]["app1"]["condition"] = "service_up"
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert len(schema_errors(broken)) == 2


def test_every_reference_resolves(compose):
    services, volumes = compose["services"], compose["volumes"]
    used = set()
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).is_file(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"
                used.add(source)
        if "build" in service:
            context = DOCKER / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert used == set(volumes), f"declared but unused: {set(volumes) - used}"


def test_start_up_is_gated_on_health(compose, dockerfile):
    services = compose["services"]

    def gates(name):
        return {dep: rule["condition"] for dep, rule in services[name]["depends_on"].items()}

    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert gates("migrate") == {"postgres": "service_healthy", "redis": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    for app in APPS:
        assert gates(app) == {"migrate": "service_completed_successfully"}
        # The app services' health check is the image's (no override, not disabled).
        assert "healthcheck" not in services[app]
    assert gates("nginx") == {app: "service_healthy" for app in APPS}
    assert "HEALTHCHECK" in [i["instruction"] for i in final_stage(dockerfile)]


def test_only_nginx_is_published_on_8080(compose):
    services = compose["services"]
    default = {name: s for name, s in services.items() if "profiles" not in s}
    published = {name: s["ports"] for name, s in default.items() if "ports" in s}
    assert published == {"nginx": ["${COLLAB_PORT:-8080}:8080"]}
    # The monitoring profile's UIs (tests/deploy/test_monitoring.py) listen on loopback only.
    for name, service in services.items():
        if "profiles" in service:
            assert all(port.startswith("127.0.0.1:") for port in service.get("ports", [])), name


def test_nginx_runs_the_committed_configuration_from_a_prefix(compose):
    nginx = compose["services"]["nginx"]
    command = nginx["command"]
    assert command[0] == "nginx" and command[-2:] == ["-g", "daemon off;"]
    config_path = command[command.index("-c") + 1]
    assert f"./nginx/collab.conf:{config_path}:ro" in nginx["volumes"]
    assert command[command.index("-p") + 1].endswith("/")


def test_the_app_services_share_one_configuration(compose):
    services = compose["services"]
    app = services["app1"]
    assert services["app2"] == app
    environment = app["environment"]
    assert environment["DATABASE_URL"].startswith("postgres://")
    assert environment["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    # The one-shot migrate fills the volume nginx serves static files from.
    static_target = next(v for v in services["migrate"]["volumes"] if v.startswith("static:"))
    assert services["migrate"]["environment"]["STATIC_ROOT"] == static_target.split(":")[1]


# -- Dockerfile --------------------------------------------------------------------------------


def stages(dockerfile) -> list[list[dict]]:
    found: list[list[dict]] = []
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def final_stage(dockerfile) -> list[dict]:
    return stages(dockerfile)[-1]


def values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_the_image_is_built_in_stages_on_slim_python(dockerfile):
    built = stages(dockerfile)
    assert len(built) >= 2
    for stage in built:
        assert values(stage, "FROM")[0].startswith("python:${PYTHON_VERSION}-slim")
    assert any("--from=build" in value for value in values(final_stage(dockerfile), "COPY"))
    assert dockerfile.baseimage == "python:3.11-slim-bookworm"  # ARG PYTHON_VERSION resolved


def test_it_collects_static_files_at_build(dockerfile):
    runs = " ".join(values(stages(dockerfile)[0], "RUN"))
    assert "manage.py collectstatic --noinput" in runs
    assert "DEBUG=false" in runs  # hashed, compressed files, as served in production


def test_it_runs_manage_py_serve_as_a_user_that_is_not_root(dockerfile):
    final = final_stage(dockerfile)
    [user] = values(final, "USER")
    assert user not in ("root", "0")
    assert any("useradd" in run and user in run for run in values(final, "RUN"))
    assert json.loads(dockerfile.cmd) == [
        "python",
        "manage.py",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    [entrypoint] = values(final, "ENTRYPOINT")
    script = ROOT / json.loads(entrypoint)[0]
    assert script.is_file() and script.stat().st_mode & stat.S_IXUSR
    # DEBUG off in the image: settings then refuse to start without SECRET_KEY/ALLOWED_HOSTS.
    assert "DEBUG=false" in " ".join(values(final, "ENV"))


def test_its_health_check_asks_healthz(dockerfile):
    [healthcheck] = values(final_stage(dockerfile), "HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command == ["python", "docker/healthcheck.py"]
    assert "127.0.0.1:8000/healthz" in (DOCKER / "healthcheck.py").read_text()


def test_everything_it_copies_exists(dockerfile):
    for stage in stages(dockerfile):
        for value in values(stage, "COPY"):
            parts = shlex.split(value)
            if any(part.startswith("--from") for part in parts):
                continue
            for source in [p for p in parts if not p.startswith("--")][:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: missing"


def test_the_build_context_leaves_out_local_state():
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for path in (".git", ".venv", "var", "staticfiles", "**/node_modules"):
        assert path in ignored


# -- the entry point, as a plain process ---------------------------------------------------------


def run_entrypoint(env: dict) -> str:
    result = subprocess.run(
        [str(DOCKER / "entrypoint.sh"), sys.executable, "-c"]
        + ["import os; print(os.environ['SECRET_KEY'])"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_entrypoint_makes_a_secret_key_once_and_keeps_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["SECRET_KEY_FILE"] = str(tmp_path / "secret_key")
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"

    first = run_entrypoint(env)
    assert len(first) >= 50
    assert run_entrypoint(env) == first
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_the_entrypoint_prefers_the_operators_key(tmp_path):
    env = {**os.environ, "SECRET_KEY": "k" * 40, "SECRET_KEY_FILE": str(tmp_path / "key")}
    assert run_entrypoint(env) == "k" * 40
    assert not (tmp_path / "key").exists()
