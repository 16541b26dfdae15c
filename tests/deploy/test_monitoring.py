"""docker/compose.yaml's `monitoring` profile: Prometheus with collab's alert rules, Grafana with
the dashboard, checked without a container engine (docs/DEPLOY.md says why there is none).

- The dashboard (docker/grafana/collab.json) loads, and every panel queries the data source
  the provisioning file defines.
- Every metric a dashboard expression or an alert rule reads is in a real scrape: GET /metrics
  of a real `manage.py serve` process after sockets opened, typed, closed and were refused.
- promtool (Debian's prometheus package; `make promtool` installs it) checks the Prometheus
  configuration and rules, runs the rules' unit tests (docker/prometheus/rules.test.yml), and
  parses every dashboard expression as PromQL.
- compose's monitoring services scrape exactly the app services, and mount what the
  provisioning files point at.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from editor.realtime import protocol
from tests import live

DOCKER = live.ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "collab.json"
PROMETHEUS = DOCKER / "prometheus"
PROMTOOL_HINT = (
    "tests/deploy need promtool (Debian: apt-get install --no-install-recommends prometheus;"
    " `make promtool` does it)"
)
# Prometheus' own series about each target, not in any scrape.
SYNTHETIC = {"up"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def load(path) -> dict:
    return yaml.safe_load(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def dashboard_expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def rule_expressions() -> list[str]:
    rules = load(PROMETHEUS / "rules.yml")
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


# -- reading metric names out of PromQL ----------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset", "inf", "nan"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers, less functions (followed by
    a parenthesis), keywords, label matchers, groupings, ranges and strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match[0].lower() in _KEYWORDS:
            continue
        names.add(match[0])
    return names


def test_it_reads_metric_names_out_of_promql():
    expression = (
        'histogram_quantile(0.99, sum by (le, source) (rate(collab_x_bucket{a="b", le="0.1"}'
        '[$__rate_interval]))) / scalar(sum(up{job="collab"})) > 2e9 and on (instance) other_total'
    )
    assert metric_names(expression) == {"collab_x_bucket", "up", "other_total"}


# -- the dashboard --------------------------------------------------------------------------------


def test_the_dashboard_loads_and_queries_the_provisioned_prometheus(dashboard):
    [source] = load(DOCKER / "grafana" / "datasource.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    wanted = {"type": "prometheus", "uid": source["uid"]}

    assert dashboard["uid"] == "collab" and dashboard["title"]
    assert len(panels(dashboard)) >= 20
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == wanted, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    [variable] = dashboard["templating"]["list"]
    assert variable["datasource"] == wanted
    assert variable["query"]["query"] == 'label_values(up{job="collab"}, instance)'


def test_the_dashboard_shows_what_the_issue_asks_for(dashboard):
    queried = " ".join(dashboard_expressions(dashboard))
    for metric in (
        "collab_websocket_connections",
        "collab_websocket_connects_total",
        "collab_websocket_refusals_total",
        "collab_fanout_seconds_bucket",
        "collab_store_flush_lag_seconds_bucket",
        "collab_redis_errors_total",
        "collab_database_errors_total",
        "process_resident_memory_bytes",
        "collab_event_loop_lag_seconds_bucket",
    ):
        assert metric in queried
    assert "sum by (code) (rate(collab_websocket_refusals_total" in queried
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, source) (rate(collab_fanout" in queried
        assert f"histogram_quantile({quantile}, sum by (le) (rate(collab_store_flush" in queried


# -- a real scrape ---------------------------------------------------------------------------------


def updates_of(text: str) -> bytes:
    doc = Doc()
    doc.get("codemirror", type=Text).insert(0, text)
    return doc.get_update()


async def some_socket_activity(servers: live.LiveServers, document, owner) -> None:
    """A socket that opens, types and closes; one refused for a forged ticket."""
    base = f"{servers.ws()}/{document.pk}"
    async with connect(f"{base}?ticket={live.ticket_for(owner, document)}") as socket:
        await asyncio.wait_for(socket.recv(), 10)
        await socket.send(protocol.sync_update(updates_of("measured")))
        await socket.send(protocol.sync_step1(Doc()))
        while not isinstance(
            protocol.parse_message(await asyncio.wait_for(socket.recv(), 10)), protocol.SyncStep2
        ):
            pass
    async with connect(f"{base}?ticket=forged") as socket:
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(socket.recv(), 10)


def scrape_after_some_activity(tmp_path, document, owner) -> set[str]:
    """The sample names of a real process's GET /metrics after some socket activity."""
    with live.LiveServers(1, tmp_path / "scraped") as servers:
        asyncio.run(some_socket_activity(servers, document, owner))
        live.wait_stored(document.pk, ["measured"])
        with urllib.request.urlopen(servers.http() + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    # The activity is in the figures: this is a scrape after work, not of an idle process.
    assert samples["collab_websocket_connects_total"] >= 1
    assert samples["collab_updates_applied_total"] >= 1
    return set(samples)


@pytest.mark.django_db(transaction=True)
def test_every_metric_the_dashboard_and_the_alerts_read_is_in_a_real_scrape(
    dashboard, tmp_path, document, owner
):
    scraped = scrape_after_some_activity(tmp_path, document, owner)

    expressions = dashboard_expressions(dashboard) + rule_expressions()
    missing = {e: metric_names(e) - scraped - SYNTHETIC for e in expressions}
    assert {e: m for e, m in missing.items() if m} == {}
    # A misspelt name would be caught.
    assert metric_names("rate(collab_websocket_conects_total[5m])") - scraped == {
        "collab_websocket_conects_total"
    }


# -- promtool ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(PROMTOOL_HINT, pytrace=False)
    return found


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_configuration_and_its_rules(promtool):
    result = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_alert_rules_pass_their_unit_tests(promtool):
    result = run(promtool, "test", "rules", str(PROMETHEUS / "rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert has a test that makes it fire.
    tests = load(PROMETHEUS / "rules.test.yml")["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    rules = load(PROMETHEUS / "rules.yml")
    assert fired == {rule["alert"] for group in rules["groups"] for rule in group["rules"]}


def test_every_dashboard_expression_is_promql(promtool, dashboard, tmp_path):
    # Grafana's variables, as Grafana fills them in, then each expression as a recording rule.
    expressions = [
        expression.replace("$__rate_interval", "1m").replace("$instance", ".*")
        for expression in dashboard_expressions(dashboard)
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expression_{n}", "expr": expression}
                    for n, expression in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout

    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(("}]}]})
    )
    assert run(promtool, "check", "rules", str(path)).returncode != 0  # the check can fail


# -- compose -------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_app_service(compose):
    services = compose["services"]
    apps = {
        name
        for name, service in services.items()
        if service.get("image") == "collab:latest" and "command" not in service
    }
    assert apps == {"app1", "app2"}
    [job] = load(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    assert job["job_name"] == "collab" and job["metrics_path"] == "/metrics"
    [targets] = job["static_configs"]
    assert sorted(targets["targets"]) == sorted(f"{app}:8000" for app in apps)


def test_the_monitoring_profile_runs_prometheus_and_grafana(compose):
    services = compose["services"]
    monitoring = {name for name, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    # Nothing else is in a profile: `docker compose up` starts the application as before.
    assert all("profiles" not in services[name] for name in set(services) - monitoring)

    prometheus = services["prometheus"]
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config.split("=", 1)[1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounts[config_path] == "./prometheus/prometheus.yml"
    # rules.yml next to the configuration, as rule_files names it.
    [rules] = load(PROMETHEUS / "prometheus.yml")["rule_files"]
    assert mounts[config_path.rsplit("/", 1)[0] + "/" + rules] == f"./prometheus/{rules}"

    grafana = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning/datasources/collab.yml"] == "./grafana/datasource.yml"
    assert mounts["/etc/grafana/provisioning/dashboards/collab.yml"] == "./grafana/dashboards.yml"
    [provider] = load(DOCKER / "grafana" / "dashboards.yml")["providers"]
    assert mounts[provider["options"]["path"] + "/collab.json"] == "./grafana/collab.json"
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_started"}}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[home] == "./grafana/collab.json"
