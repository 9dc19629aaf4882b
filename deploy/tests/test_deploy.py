"""Checks of deploy/ with the tools that run without Docker or Kubernetes.

The static checks need promtool, hadolint, PyYAML, kubectl (for `kubectl kustomize`) and checkov
(`scripts/install-deps.sh test` installs all but kubectl, which the machine image ships).
The live checks start `lead-relay kafka-dev`, `seeker-leads-sim` and `lead-relay run` from the
build folder (LEAD_RELAY_BIN_DIR, default .build/debug), publish two leads with kcat, and check
the relay's /metrics directly and through a real Prometheus server.
"""

import copy
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "lead-relay.json"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
BIN_DIR = Path(os.environ.get("LEAD_RELAY_BIN_DIR", REPO / ".build" / "debug"))

# The relay's metric contract (issue 5); dashboards and alerts may use only these, plus `up`.
CONTRACT_METRICS = {
    "lead_relay_records_consumed_total",
    "lead_relay_outcomes_total",
    "lead_relay_dead_letters_total",
    "lead_relay_api_requests_total",
    "lead_relay_api_request_duration_seconds",
    "lead_relay_api_in_flight",
    "lead_relay_budget_wait_seconds",
    "lead_relay_retries_total",
    "lead_relay_circuit_open",
    "lead_relay_consumer_lag",
    "lead_relay_oldest_unfinished_age_seconds",
    "lead_relay_end_to_end_seconds",
    "lead_relay_ready",
    "lead_relay_auth_failing",
}
HISTOGRAMS = {
    "lead_relay_api_request_duration_seconds",
    "lead_relay_budget_wait_seconds",
    "lead_relay_end_to_end_seconds",
}

# The relay's configuration contract (issues 4, 5 and 12). Any KAFKA_<NAME> is a librdkafka property.
SECRET_VARIABLES = {
    "SEEKER_LEADS_TOKEN",
    "SEEKER_LEADS_CLIENT_ID",
    "SEEKER_LEADS_CLIENT_SECRET",
    "KAFKA_SASL_PASSWORD",
    "LEAD_RELAY_DATABASE_URL",
}
CONFIG_VARIABLES = {
    "LEAD_RELAY_GROUP_ID", "LEAD_RELAY_INPUT_TOPIC", "LEAD_RELAY_RESULTS_TOPIC", "LEAD_RELAY_DLQ_TOPIC",
    "LEAD_RELAY_HTTP_HOST", "LEAD_RELAY_HTTP_PORT", "LEAD_RELAY_DEDUPE_DB", "LEAD_RELAY_DEDUPE_TTL_HOURS",
    "LEAD_RELAY_RETRY_DEADLINE_SECONDS", "LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS", "LEAD_RELAY_LOG_LEVEL",
    "LEAD_RELAY_LOG_FORMAT", "LEAD_RELAY_MAX_IN_FLIGHT", "LEAD_RELAY_RATE_LIMIT", "LEAD_RELAY_RATE_WINDOW_MS",
    "LEAD_RELAY_RETRY_BASE_MS", "LEAD_RELAY_RETRY_MAX_MS", "LEAD_RELAY_EVENT_TYPE", "LEAD_RELAY_MAX_EVENT_BYTES",
    "SEEKER_LEADS_BASE_URL", "SEEKER_LEADS_TOKEN_URL", "SEEKER_LEADS_AUDIENCE", "SEEKER_LEADS_TIMEOUT_MS",
    "LEAD_RELAY_BUDGET_KEY", "LEAD_RELAY_DATABASE_CONNECT_TIMEOUT_SECONDS",
} | SECRET_VARIABLES | {name + "_FILE" for name in SECRET_VARIABLES}

# The API budget every replica shares: 10 starts per 200 ms and 10 in flight, per API client. With the
# shared database each relay is given all of it.
API_RATE_LIMIT = 10
API_MAX_IN_FLIGHT = 10
API_RATE_WINDOW_MS = 200
INPUT_TOPIC_PARTITIONS = 6

# What the budget's division among replicas used to be written as; with a shared budget none of it may remain.
PER_REPLICA_ARITHMETIC = re.compile(
    r"1/replicas|1/N\b|budget share|each replica (takes|gets)|half the budget|gets half|with the replica count"
    r"|× replicas|\* replicas|maxSurge: 0", re.IGNORECASE)

METRIC_TOKEN = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


# ---------------------------------------------------------------- helpers


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def alert_rules():
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_panels():
    return json.loads(DASHBOARD.read_text())["panels"]


def dashboard_exprs():
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def metric_names_in(expr):
    """Metric names an expression reads: lead_relay_* tokens (histogram series mapped to their
    family) and `up`. Label values inside quotes are not names."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set()
    for token in METRIC_TOKEN.findall(without_strings):
        if token.startswith("lead_relay_"):
            family = re.sub(r"_(bucket|sum|count)$", "", token)
            names.add(family if family in HISTOGRAMS else token)
        elif token == "up":
            names.add(token)
    return names


def used_metric_names():
    names = set()
    for expr in [rule["expr"] for rule in alert_rules()] + dashboard_exprs():
        names |= metric_names_in(expr)
    return names


def github_anchor(heading):
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def readme_anchors():
    text = (DEPLOY / "README.md").read_text()
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.MULTILINE)}


def render_kustomization(directory=KUBERNETES):
    """The objects `kubectl apply -k` would apply, as kustomize renders them."""
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@functools.cache
def rendered_manifests():
    return render_kustomization()


def kubernetes_objects():
    """The rendered objects by (kind, name), the generated ConfigMap under its name without the hash, and the
    Secret's shape from secret.example.yaml (applied separately)."""
    objects = {}
    for doc in copy.deepcopy(rendered_manifests()) + load_yaml_documents(KUBERNETES / "secret.example.yaml"):
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0]
        objects[(doc["kind"], name)] = doc
    return objects


def configmap_reference(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (source,) = container["envFrom"]
    return source["configMapRef"]["name"]


def relay_services(compose):
    """The compose services that run `lead-relay run`, by name."""
    return {name: service for name, service in compose["services"].items() if service.get("command") == ["run"]}


def compose_secret_text(compose, name):
    return (COMPOSE.parent / compose["secrets"][name]["file"]).read_text()


def container_secret_file(service, variable):
    """The compose secret a *_FILE variable points at (compose mounts secret <name> at /run/secrets/<name>)."""
    path = Path(service["environment"][variable])
    assert path.parent == Path("/run/secrets"), f"{variable}={path} is not a compose secret"
    assert path.name in service.get("secrets", []), f"{variable}: the service does not mount secret {path.name}"
    return path.name


def dockerfile_instructions():
    """(instruction, arguments) pairs of the Dockerfile, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for line in logical:
        instruction, _, arguments = line.strip().partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def dockerfile_stages():
    stages, current = [], None
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM":
            current = {"from": arguments, "instructions": []}
            stages.append(current)
        else:
            current["instructions"].append((instruction, arguments))
    return stages


def apt_packages_installed(stage):
    packages = set()
    for instruction, arguments in stage["instructions"]:
        if instruction == "RUN" and "apt-get install" in arguments:
            install = arguments.split("apt-get install", 1)[1].split("&&", 1)[0]
            packages |= {word for word in shlex.split(install) if not word.startswith("-")}
    return packages


def healthcheck_command():
    for instruction, arguments in dockerfile_instructions():
        if instruction == "HEALTHCHECK":
            return json.loads(arguments.split("CMD", 1)[1].strip())
    raise AssertionError("the Dockerfile has no HEALTHCHECK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    """(status, body) of a GET; (None, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return None, str(error)


def wait_until(condition, deadline_seconds, describe):
    """Polls condition() until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_seconds} s waiting for {describe()}")
        time.sleep(0.1)


class Service:
    """A child process whose stderr (and stdout after an optional announced line) goes to a log."""

    def __init__(self, name, args, env, log_dir, announces=None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if announces else self._log, stderr=self._log,
        )
        self.announced = self._read_announcement(announces) if announces else None

    def _read_announcement(self, prefix):
        lines = []

        def read_first_line():
            lines.append(self.process.stdout.readline().decode().strip())
            # Keep draining so that later output can never fill the pipe and block the child.
            for line in self.process.stdout:
                self._log.write(line)

        threading.Thread(target=read_first_line, daemon=True).start()
        wait_until(lambda: lines or self.process.poll() is not None, 60,
                   lambda: f"{self.name} to print {prefix}=...; {self.log_tail()}")
        assert lines and lines[0].startswith(prefix + "="), \
            f"{self.name} printed {lines[:1]!r}, not {prefix}=...; exit {self.process.poll()}; {self.log_tail()}"
        return lines[0].split("=", 1)[1]

    def log_tail(self, lines=30):
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"last lines of {self.log_path}:\n" + "\n".join(text[-lines:])

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def sample_structured_event(event_id, classified_id):
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:lead-relay:deploy-tests",
        "type": "lead.submitted",
        "datacontenttype": "application/json",
        "data": {
            "lastName": "Doe",
            "email": "jane.doe@example.com",
            "phoneNumbers": [{"number": "+33511223344", "type": "MOBILE"}],
            "message": "Is the flat still available?",
            "classifiedId": classified_id,
            "submittedDate": "2025-01-15T10:00:00+01:00",
        },
    }


# ---------------------------------------------------------------- Prometheus rules and config


def test_promtool_check_rules():
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config():
    result = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests():
    """The alerts fire on the series they are about and stay quiet on healthy ones."""
    result = subprocess.run(["promtool", "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_in_which_it_fires():
    """promtool passes a rule without any test case: each alert needs one where it fires with its severity."""
    rules = {rule["alert"]: rule for rule in alert_rules()}
    firing = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in rules, f"alerts.test.yaml tests {name}, which alerts.yaml does not define"
            for alert in check.get("exp_alerts") or []:
                assert alert["exp_labels"]["severity"] == rules[name]["labels"]["severity"], name
                firing.add(name)
    assert not set(rules) - firing, f"no test case in which these alerts fire: {sorted(set(rules) - firing)}"


def test_every_alert_has_severity_summary_and_a_runbook_section():
    anchors = readme_anchors()
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "LeadRelayDeadLetters", "LeadRelayConsumerLagGrowing", "LeadRelayCircuitOpen",
        "LeadRelayAuthFailing", "LeadRelayBudgetSaturated", "LeadRelayNotReady",
        "LeadRelayInvalidRecords", "LeadRelayLeadsWaitingTooLong", "LeadRelayLeadsDelayed",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "deploy/README.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, \
            f"{rule['alert']}: no section #{anchor} in deploy/README.md"


def test_alerts_use_only_contract_metrics():
    for rule in alert_rules():
        names = metric_names_in(rule["expr"])
        assert names, f"{rule['alert']} reads no metric"
        assert names <= CONTRACT_METRICS | {"up"}, f"{rule['alert']}: unknown {names - CONTRACT_METRICS - {'up'}}"


# ---------------------------------------------------------------- Grafana


def test_dashboard_parses_and_uses_only_contract_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = metric_names_in(target["expr"])
            assert names <= CONTRACT_METRICS, f"panel {panel['title']!r}: unknown {names - CONTRACT_METRICS}"
            assert names or target["expr"].startswith("vector("), f"panel {panel['title']!r} reads no metric"


def test_dashboard_covers_the_issue_panels():
    read = {}
    for panel in dashboard_panels():
        for target in panel["targets"]:
            for name in metric_names_in(target["expr"]):
                read.setdefault(name, []).append(target["expr"])
    assert any("by (outcome)" in e for e in read["lead_relay_outcomes_total"])
    assert any("by (reason)" in e for e in read["lead_relay_dead_letters_total"])
    assert any("by (code)" in e for e in read["lead_relay_api_requests_total"])
    for histogram in ("lead_relay_api_request_duration_seconds", "lead_relay_budget_wait_seconds"):
        assert {q for e in read[histogram] for q in re.findall(r"histogram_quantile\((0\.\d+)", e)} >= {"0.5", "0.99"}
    assert any("partition" in e for e in read["lead_relay_consumer_lag"])
    assert {"lead_relay_circuit_open", "lead_relay_api_in_flight"} <= read.keys()
    assert "vector(50)" in dashboard_exprs(), "budget use is shown against the 50/s ceiling"


# ---------------------------------------------------------------- YAML and Kubernetes


def test_every_yaml_file_parses_and_kubernetes_objects_are_named():
    yaml_files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
    assert len(yaml_files) >= 10
    for path in yaml_files:
        documents = load_yaml_documents(path)
        assert documents, f"{path} is empty"
        if path.parent == KUBERNETES:
            for doc in documents:
                assert doc.get("apiVersion") and doc.get("kind"), f"{path}: object without apiVersion or kind"
                if doc["kind"] != "Kustomization":
                    assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without metadata.name"


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == manifests
    (generator,) = kustomization["configMapGenerator"]
    assert generator["envs"] == ["lead-relay.env"]
    assert "configmap.yaml" not in manifests, "the ConfigMap is generated, so that its name follows its contents"


def test_every_object_is_in_the_namespace_of_the_kustomization():
    namespace = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["namespace"]
    assert namespace not in {"", "default", "kube-system"}
    for doc in rendered_manifests():
        assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']} {doc['metadata']['name']}"


def test_a_configuration_change_rolls_the_pods(tmp_path):
    """A changed value renames the ConfigMap, and the Deployment's pod template follows the new name: a new
    template is what makes Kubernetes replace the pods (a ConfigMap edited in place never does)."""
    before = render_kustomization()
    changed = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, changed)
    env_file = changed / "lead-relay.env"
    env_file.write_text(env_file.read_text().replace("LEAD_RELAY_LOG_LEVEL=info", "LEAD_RELAY_LOG_LEVEL=debug"))
    after = render_kustomization(changed)

    def configmap_and_deployment(docs):
        (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        return configmap, deployment

    old_configmap, old_deployment = configmap_and_deployment(before)
    new_configmap, new_deployment = configmap_and_deployment(after)
    assert new_configmap["data"]["LEAD_RELAY_LOG_LEVEL"] == "debug"
    assert old_configmap["metadata"]["name"] != new_configmap["metadata"]["name"]
    for configmap, deployment in ((old_configmap, old_deployment), (new_configmap, new_deployment)):
        assert re.fullmatch(r"lead-relay-[a-z0-9]{10}", configmap["metadata"]["name"])
        assert configmap_reference(deployment) == configmap["metadata"]["name"]
    assert old_deployment["spec"]["template"] != new_deployment["spec"]["template"]


def test_kubernetes_objects_fit_together():
    objects = kubernetes_objects()
    deployment = objects[("Deployment", "lead-relay")]
    config = objects[("ConfigMap", "lead-relay")]["data"]
    secret = objects[("Secret", "lead-relay-credentials")]
    service = objects[("Service", "lead-relay")]
    monitor = objects[("ServiceMonitor", "lead-relay")]
    budget = objects[("PodDisruptionBudget", "lead-relay")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"

    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"],
                     budget["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    (container,) = pod["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names["http"] == int(config["LEAD_RELAY_HTTP_PORT"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(config["LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS"])

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts.keys() == volumes.keys(), "every volume is mounted, every mount has its volume"
    secret_volume = next(name for name, v in volumes.items() if "secret" in v)
    assert volumes[secret_volume]["secret"]["secretName"] == secret["metadata"]["name"]
    file_variables = {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_FILE")}
    assert file_variables.keys() >= {"SEEKER_LEADS_CLIENT_ID_FILE", "SEEKER_LEADS_CLIENT_SECRET_FILE",
                                     "KAFKA_SASL_PASSWORD_FILE", "LEAD_RELAY_DATABASE_URL_FILE"}
    for name, path in file_variables.items():
        assert Path(path).parent == Path(mounts[secret_volume]), name
        assert Path(path).name in secret["stringData"], f"{name}: no key {Path(path).name} in the Secret"

    variables = set(config) | {e["name"] for e in container["env"]}
    unknown = {v for v in variables if v not in CONFIG_VARIABLES and not v.startswith("KAFKA_")}
    assert not unknown, f"not relay variables: {unknown}"
    assert not variables & SECRET_VARIABLES, "secrets are passed as *_FILE only"


def test_the_configmap_holds_the_whole_api_budget_whatever_the_replica_count():
    """With the database every relay draws on one budget: the ConfigMap carries the API's, not a share of it."""
    objects = kubernetes_objects()
    deployment = objects[("Deployment", "lead-relay")]
    config = objects[("ConfigMap", "lead-relay")]["data"]
    assert 1 <= deployment["spec"]["replicas"] <= INPUT_TOPIC_PARTITIONS
    assert int(config["LEAD_RELAY_MAX_IN_FLIGHT"]) == API_MAX_IN_FLIGHT
    assert int(config["LEAD_RELAY_RATE_LIMIT"]) == API_RATE_LIMIT
    assert int(config["LEAD_RELAY_RATE_WINDOW_MS"]) == API_RATE_WINDOW_MS
    # A surge pod shares the budget, so a rollout may add one (and keeps every partition consumed meanwhile).
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxSurge"] not in (0, "0", "0%")
    assert rolling["maxUnavailable"] in (0, "0", "0%")


def test_no_per_replica_budget_arithmetic_remains():
    """Scaling is `kubectl scale` alone: no value and no comment divides the budget by the replica count."""
    paths = sorted(KUBERNETES.iterdir()) + [DEPLOY / "README.md", COMPOSE]
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not PER_REPLICA_ARITHMETIC.search(line), f"{path.relative_to(REPO)}:{number}: {line.strip()}"


def test_kubernetes_takes_the_database_url_from_the_secret():
    objects = kubernetes_objects()
    deployment = objects[("Deployment", "lead-relay")]
    config = objects[("ConfigMap", "lead-relay")]["data"]
    secret = objects[("Secret", "lead-relay-credentials")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "LEAD_RELAY_DATABASE_URL" not in env and "LEAD_RELAY_DATABASE_URL" not in config, \
        "the URL carries the password: never as a plain value"
    path = Path(env["LEAD_RELAY_DATABASE_URL_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    url = urllib.parse.urlsplit(secret["stringData"][path.name])
    assert url.scheme == "postgres" and url.username and url.password and url.path.strip("/")
    assert urllib.parse.parse_qs(url.query) == {"sslmode": ["verify-full"]}, "the example checks the certificate"
    # The dedupe store is the database's: no per-pod SQLite file, so no volume for one.
    assert "LEAD_RELAY_DEDUPE_DB" not in config
    assert not any(Path(m["mountPath"]) == Path("/var/lib/lead-relay") for m in container["volumeMounts"])


def test_network_policy_allows_only_what_the_relay_uses():
    objects = kubernetes_objects()
    policy = objects[("NetworkPolicy", "lead-relay")]["spec"]
    deployment = objects[("Deployment", "lead-relay")]
    config = objects[("ConfigMap", "lead-relay")]["data"]
    pod = deployment["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}, "both directions default to deny"

    (ingress,) = policy["ingress"]
    assert "from" not in ingress, "the kubelet and Prometheus come from addresses the policy cannot name"
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    (container,) = pod["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == ["http"], "the health and metrics port is the only one"

    def ports(rule):
        return {(p["port"], p["protocol"]) for p in rule["ports"]}

    egress = policy["egress"]
    assert all(rule.get("to") and rule.get("ports") for rule in egress), "every egress rule names peers and ports"
    allowed = set().union(*(ports(rule) for rule in egress))
    kafka_hosts = [server.rsplit(":", 1) for server in config["KAFKA_BOOTSTRAP_SERVERS"].split(",")]
    database = urllib.parse.urlsplit(objects[("Secret", "lead-relay-credentials")]["stringData"]["database-url"])
    expected = {(53, "UDP"), (53, "TCP"), (database.port or 5432, "TCP")} | {
        (int(port), "TCP") for _, port in kafka_hosts}
    for variable in ("SEEKER_LEADS_BASE_URL", "SEEKER_LEADS_TOKEN_URL"):
        url = urllib.parse.urlsplit(config[variable])
        expected.add((url.port or {"https": 443, "http": 80}[url.scheme], "TCP"))
    assert allowed == expected

    kafka_rules = [rule for rule in egress if ports(rule) == {(int(port), "TCP") for _, port in kafka_hosts}]
    namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for rule in kafka_rules for peer in rule["to"]}
    # Service DNS names are <service>.<namespace>.svc: the policy must let the relay reach that namespace.
    assert {host.split(".")[1] for host, _ in kafka_hosts if host.endswith(".svc")} <= namespaces
    database_rules = [rule for rule in egress if ports(rule) == {(database.port or 5432, "TCP")}]
    database_namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                           for rule in database_rules for peer in rule["to"]}
    if database.hostname.endswith(".svc"):
        assert database.hostname.split(".")[1] in database_namespaces


def checkov_executable():
    """checkov lives in a virtual environment of its own (scripts/install-deps.sh test puts it there)."""
    venv = Path(os.environ.get("CHECKOV_VENV", Path.home() / ".cache" / "lead-relay" / "checkov"))
    executable = venv / "bin" / "checkov"
    assert executable.is_file(), f"{executable} is missing: run scripts/install-deps.sh test"
    return executable


def test_checkov_passes_on_the_rendered_manifests(tmp_path):
    """Every check of an independent scanner passes, or is skipped in the manifest with its reason."""
    rendered = tmp_path / "lead-relay.yaml"
    rendered.write_text(yaml.safe_dump_all(rendered_manifests()))
    # Offline: without these checkov asks its vendor's server for guideline links before scanning.
    environment = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    result = subprocess.run(
        [str(checkov_executable()), "--file", str(rendered), "--framework", "kubernetes", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, env=environment, timeout=300)
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 80, report["summary"]
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} is skipped without a reason"
    # The image digest and pull policy (see deploy/README.md#the-image-by-digest); a new skip is a new decision.
    assert {c["check_id"] for c in skipped} == {"CKV_K8S_43", "CKV_K8S_15"}


# ---------------------------------------------------------------- compose


def test_compose_services_reference_files_and_services_that_exist():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"kafka", "kafka-init", "seeker-leads-sim", "postgres", "lead-relay-1", "lead-relay-2",
            "prometheus"} <= services.keys()
    for name, service in services.items():
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: unknown secret {secret}"
    for secret in compose["secrets"].values():
        assert (COMPOSE.parent / secret["file"]).is_file()
    # No dead declarations: every declared volume and secret is used by a service.
    used_volumes = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert set(compose["volumes"]) <= used_volumes
    assert set(compose["secrets"]) <= {x for s in services.values() for x in s.get("secrets", [])}
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), f"published host ports collide: {host_ports}"


def test_compose_stack_is_wired_as_the_relay_expects():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    relays = relay_services(compose)
    assert set(relays) == {"lead-relay-1", "lead-relay-2"}, "two relays share the database"
    simulator_port = services["seeker-leads-sim"]["command"][services["seeker-leads-sim"]["command"].index("--port") + 1]
    for name, relay in relays.items():
        environment = relay["environment"]
        unknown = {v for v in environment if v not in CONFIG_VARIABLES and not v.startswith("KAFKA_")}
        assert not unknown, f"{name}: not relay variables: {unknown}"
        assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert environment["SEEKER_LEADS_BASE_URL"] == f"http://seeker-leads-sim:{simulator_port}"
        token = compose_secret_text(compose, container_secret_file(relay, "SEEKER_LEADS_TOKEN_FILE"))
        assert token == "dev-token", "the simulator's static token, with no trailing newline"
        assert int(relay["stop_grace_period"].rstrip("s")) > int(environment["LEAD_RELAY_SHUTDOWN_TIMEOUT_SECONDS"])
        (port,) = relay["ports"]
        assert port.split(":")[1] == "8080"
        # With the database the whole budget is each relay's (the defaults); a share would waste it.
        for variable, whole in (("LEAD_RELAY_MAX_IN_FLIGHT", API_MAX_IN_FLIGHT),
                                ("LEAD_RELAY_RATE_LIMIT", API_RATE_LIMIT),
                                ("LEAD_RELAY_RATE_WINDOW_MS", API_RATE_WINDOW_MS)):
            assert int(environment.get(variable, whole)) == whole, f"{name}: {variable}"
    init_script = services["kafka-init"]["command"][0]
    for topic in ("leads.submitted:6", "leads.results:6", "leads.dlq:1"):
        assert topic in init_script
    assert set(relays) <= services["prometheus"]["depends_on"].keys()
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "lead-relay", "the job the alerts expect"
    (static,) = job["static_configs"]
    assert sorted(static["targets"]) == sorted(f"{name}:8080" for name in relays), "every relay is scraped"


def test_compose_relays_share_one_postgres_through_a_secret_url():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    (data,) = postgres["volumes"]
    volume, mount_path = data.split(":")[:2]
    assert volume in compose["volumes"] and mount_path == "/var/lib/postgresql/data", "a named volume for the data"
    server = postgres["environment"]
    assert "POSTGRES_PASSWORD" not in server, "the password comes from a secret file"
    password = compose_secret_text(compose, container_secret_file(postgres, "POSTGRES_PASSWORD_FILE"))
    assert password and not password.endswith("\n")
    for name, relay in relay_services(compose).items():
        assert relay["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        environment = relay["environment"]
        assert "LEAD_RELAY_DATABASE_URL" not in environment, f"{name}: the URL carries the password"
        text = compose_secret_text(compose, container_secret_file(relay, "LEAD_RELAY_DATABASE_URL_FILE"))
        assert not text.endswith("\n")
        url = urllib.parse.urlsplit(text)
        assert url.scheme == "postgres" and url.hostname == "postgres" and (url.port or 5432) == 5432
        assert url.username == server["POSTGRES_USER"] and url.path == "/" + server["POSTGRES_DB"]
        assert urllib.parse.unquote(url.password) == password, "the URL's password is the server's"
        # The postgres image serves no TLS; require (the relay's default) would fail to connect.
        assert urllib.parse.parse_qs(url.query) == {"sslmode": ["disable"]}
        assert not relay.get("volumes"), f"{name}: with the database nothing needs a volume"


def test_every_link_into_the_deploy_readme_names_a_section():
    anchors = readme_anchors()
    sources = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".env", ".md", ""}]
    sources.append(REPO / "README.md")
    for path in sources:
        text = path.read_text(errors="replace")
        for anchor in re.findall(r"deploy/README\.md#([a-z0-9-]+)", text):
            assert anchor in anchors, f"{path.relative_to(REPO)}: no section #{anchor} in deploy/README.md"
        if path.name == "README.md" and path.parent == DEPLOY:
            for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
                assert anchor in anchors, f"deploy/README.md: no section #{anchor}"


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_passes():
    result = subprocess.run(["hadolint", "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_release_binaries_and_runs_them_slim_and_unprivileged():
    build, runtime = dockerfile_stages()
    assert build["from"] == "swift:6.3.1-bookworm AS build"
    assert runtime["from"].startswith("debian:bookworm-slim")
    build_runs = " ".join(a for i, a in build["instructions"] if i == "RUN")
    for product in ("lead-relay", "seeker-leads-sim"):
        assert f"swift build -c release --static-swift-stdlib --product {product}" in build_runs
    assert apt_packages_installed(runtime) <= {"ca-certificates", "librdkafka1", "libsqlite3-0", "tzdata"}
    instructions = dict(runtime["instructions"])
    user = instructions["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root user, checkable by runAsNonRoot"
    assert instructions["EXPOSE"] == "8080"
    assert json.loads(instructions["ENTRYPOINT"]) == ["lead-relay"]
    assert json.loads(instructions["CMD"]) == ["run"]
    dedupe_db = re.search(r"LEAD_RELAY_DEDUPE_DB=(\S+)", instructions["ENV"]).group(1)
    assert f"/var/lib/lead-relay" == str(Path(dedupe_db).parent)
    assert "install -d -o lead-relay -g lead-relay" in " ".join(a for i, a in runtime["instructions"] if i == "RUN")
    assert "/health/live" in " ".join(healthcheck_command())


def test_dockerignore_keeps_build_outputs_out_of_the_context():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".build", ".build-*", ".git", "**/*.sqlite", "bench-work"} <= ignored
    assert not ignored & {"Sources", "Tests", "schemas", "Package.swift"}


@pytest.mark.parametrize("product", ["lead-relay", "seeker-leads-sim"])
def test_runtime_packages_cover_linked_libraries(product):
    """Each shared library the executable loads, outside the Swift runtime (linked statically in
    the image), comes from a package the runtime stage installs or from the slim base."""
    binary = BIN_DIR / product
    assert binary.is_file(), f"{binary} is not built (make test builds it)"
    _, runtime = dockerfile_stages()
    installed = apt_packages_installed(runtime)
    closure = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *sorted(installed)],
        capture_output=True, text=True, check=True).stdout
    available = installed | {line.strip().split(": ")[-1] for line in closure.splitlines()} | {
        # Essential or required in debian:bookworm-slim (apt depends on the C++ runtime).
        "libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
    swift_runtime = Path(os.path.realpath(subprocess.run(["which", "swift"], capture_output=True, text=True,
                                                         check=True).stdout.strip())).parents[1]
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    missing = {}
    for library in re.findall(r"=> (/\S+)", ldd):
        if Path(library).resolve().is_relative_to(swift_runtime.resolve()):
            continue
        owner = subprocess.run(["dpkg", "-S", library], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", str(Path(library).resolve())], capture_output=True, text=True)
        package = owner.stdout.split(":")[0]
        if package not in available:
            missing[library] = package or "no package"
    assert not missing, f"libraries the runtime stage lacks: {missing}"


class _StatusHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health/live" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def run_healthcheck(port):
    return subprocess.run(healthcheck_command(), env={**os.environ, "LEAD_RELAY_HTTP_PORT": str(port)},
                          capture_output=True, timeout=10)


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_dockerfile_healthcheck_follows_the_status(status, healthy):
    handler = type("Handler", (_StatusHandler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert (run_healthcheck(server.server_address[1]).returncode == 0) == healthy
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_fails_when_nothing_listens():
    assert run_healthcheck(free_port()).returncode != 0


# ---------------------------------------------------------------- live: the relay on loopback


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    """kafka-dev, the simulator and `lead-relay run`, with one valid and one invalid lead published."""
    work = tmp_path_factory.mktemp("relay")
    for product in ("lead-relay", "seeker-leads-sim"):
        assert (BIN_DIR / product).is_file(), f"{BIN_DIR / product} is not built (make test builds it)"
    services = []
    try:
        kafka = Service("kafka-dev", [str(BIN_DIR / "lead-relay"), "kafka-dev"], os.environ, work,
                        announces="KAFKA_BOOTSTRAP_SERVERS")
        services.append(kafka)
        simulator = Service("seeker-leads-sim",
                            [str(BIN_DIR / "seeker-leads-sim"), "--host", "127.0.0.1", "--port", "0"],
                            os.environ, work, announces="SEEKER_LEADS_BASE_URL")
        services.append(simulator)
        port = free_port()
        environment = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("KAFKA_", "LEAD_RELAY_", "SEEKER_LEADS_"))},
            "KAFKA_BOOTSTRAP_SERVERS": kafka.announced,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "SEEKER_LEADS_BASE_URL": simulator.announced,
            "SEEKER_LEADS_TOKEN": "dev-token",
            "LEAD_RELAY_HTTP_HOST": "127.0.0.1",
            "LEAD_RELAY_HTTP_PORT": str(port),
            "LEAD_RELAY_DEDUPE_DB": str(work / "d.sqlite"),
        }
        relay_service = Service("lead-relay", [str(BIN_DIR / "lead-relay"), "run"], environment, work)
        services.append(relay_service)
        base_url = f"http://127.0.0.1:{port}"

        def live():
            assert relay_service.process.poll() is None, \
                f"lead-relay run exited with {relay_service.process.returncode}; {relay_service.log_tail()}"
            return http_get(base_url + "/health/live")[0] == 200

        wait_until(live, 60, lambda: f"{base_url}/health/live to answer 200; {relay_service.log_tail()}")

        run_id = uuid.uuid4().hex
        leads = {
            f"deploy-test-valid-{run_id}": sample_structured_event(f"valid-{run_id}", "12ABCDEFGHJK"),
            # The letter O is outside the classifiedId alphabet: a schema violation, dead-lettered.
            f"deploy-test-invalid-{run_id}": sample_structured_event(f"invalid-{run_id}", "12ABCDEFGHJO"),
        }
        for key, event in leads.items():
            subprocess.run(["kcat", "-P", "-b", kafka.announced, "-t", "leads.submitted", "-k", key,
                            "-X", "message.timeout.ms=30000"],
                           input=json.dumps(event).encode(), check=True, timeout=60, capture_output=True)
        yield {"base_url": base_url, "port": port, "service": relay_service, "published": len(leads)}
    finally:
        for service in reversed(services):
            service.stop()


def scrape(base_url):
    status, body = http_get(base_url + "/metrics")
    return body if status == 200 else ""


def exposed_metric_names(text):
    names = set()
    for line in text.splitlines():
        match = re.match(r"# TYPE (\S+) ", line) or re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
        if match:
            name = re.sub(r"_(bucket|sum|count)$", "", match.group(1))
            names.add(name if name in HISTOGRAMS else match.group(1))
    return names


def test_relay_exposes_every_metric_the_alerts_and_dashboard_use(relay):
    wanted = used_metric_names() - {"up"}
    assert wanted <= CONTRACT_METRICS
    found = {}

    def all_exposed():
        found["names"] = exposed_metric_names(scrape(relay["base_url"]))
        return wanted <= found["names"]

    wait_until(all_exposed, 60,
               lambda: f"/metrics to expose {sorted(wanted - found.get('names', set()))}; {relay['service'].log_tail()}")


def test_dockerfile_healthcheck_passes_against_the_running_relay(relay):
    result = run_healthcheck(relay["port"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_relay_and_evaluates_the_alerts(relay, tmp_path):
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "lead-relay", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [relay["base_url"].removeprefix("http://")]}]}],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    prometheus = Service("prometheus", [
        "prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], os.environ, tmp_path)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        def consumed():
            assert prometheus.process.poll() is None, f"prometheus exited; {prometheus.log_tail()}"
            query = urllib.parse.urlencode({"query": "sum(lead_relay_records_consumed_total)"})
            status, body = http_get(f"{api}/query?{query}")
            if status != 200:
                return None
            result = json.loads(body)["data"]["result"]
            return result and float(result[0]["value"][1]) >= relay["published"]

        wait_until(consumed, 60, lambda: f"Prometheus to report {relay['published']} records consumed; "
                                         f"{prometheus.log_tail()}")

        def every_rule_evaluated():
            status, body = http_get(f"{api}/rules")
            rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]] if status == 200 else []
            return rules if rules and all(r["health"] != "unknown" for r in rules) else None

        rules = wait_until(every_rule_evaluated, 60, lambda: "every alert rule to be evaluated")
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not unhealthy, unhealthy
    finally:
        prometheus.stop()
