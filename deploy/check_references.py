"""What the schema validators cannot see: references between the parts of each deployment
artifact (a secret a service names but nobody defines, a probe on the wrong port, a selector
that selects nothing), and a run of the release binaries as the Dockerfile starts them.

    check_references.py compose deploy/compose.yaml
    check_references.py kubernetes deploy/kubernetes
    check_references.py smoke deploy/Dockerfile target/release PROMTOOL

Run by deploy/check. Exits 1 with one line per problem.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
problems = []


def problem(message):
    problems.append(message)
    print(f"problem: {message}", file=sys.stderr)


def documented_variables():
    """Every variable the README's configuration table names."""
    readme = (REPO / "README.md").read_text()
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", readme))


def dockerfile_stages(path):
    """Each named stage: its ENV, EXPOSE, HEALTHCHECK command and ENTRYPOINT."""
    stages, current = {}, None
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if match:
            base, name = match.group(1), match.group(2)
            inherited = stages.get(base, {"env": {}, "expose": [], "healthcheck": None, "entrypoint": None})
            current = {k: (dict(v) if isinstance(v, dict) else v) for k, v in inherited.items()}
            if name:
                stages[name] = current
            continue
        if current is None:
            continue
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                current["env"][key] = value
        elif line.startswith("EXPOSE "):
            current["expose"] = [int(p) for p in line.split()[1:]]
        elif line.startswith("HEALTHCHECK "):
            current["healthcheck"] = json.loads(line[line.index("CMD") + 3 :].strip())
        elif line.startswith("ENTRYPOINT "):
            current["entrypoint"] = json.loads(line[len("ENTRYPOINT ") :])
    return stages


def check_compose(path):
    path = Path(path)
    base = path.parent
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    secrets, networks, volumes = (set(doc.get(k) or {}) for k in ("secrets", "networks", "volumes"))
    known = documented_variables()
    make_secrets = (base / "compose" / "make-secrets.sh").read_text()
    for name, secret in (doc.get("secrets") or {}).items():
        file = Path(secret["file"]).name
        if file not in make_secrets:
            problem(f"compose: secret {name}'s file {file} is not written by compose/make-secrets.sh")
    for name, service in services.items():
        for secret in service.get("secrets", []):
            if secret not in secrets:
                problem(f"compose: {name} uses secret {secret}, which is not defined")
        for dependency, condition in (service.get("depends_on") or {}).items():
            if dependency not in services:
                problem(f"compose: {name} depends on {dependency}, which is not a service")
                continue
            if condition.get("condition") == "service_healthy":
                target = services[dependency]
                has_check = "healthcheck" in target
                if not has_check and "build" in target:
                    stage = dockerfile_stages(base / ".." / target["build"]["dockerfile"]).get(target["build"]["target"])
                    has_check = bool(stage and stage["healthcheck"])
                if not has_check:
                    problem(f"compose: {name} waits for {dependency} to be healthy, which has no health check")
        for network in service.get("networks", []):
            if network not in networks:
                problem(f"compose: {name} joins network {network}, which is not defined")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                if not (base / source).exists():
                    problem(f"compose: {name} mounts {source}, which does not exist")
            elif source not in volumes:
                problem(f"compose: {name} mounts volume {source}, which is not defined")
        build = service.get("build")
        if build:
            dockerfile = base / build["context"] / build["dockerfile"]
            if build["target"] not in dockerfile_stages(dockerfile):
                problem(f"compose: {name} builds target {build['target']}, which {dockerfile} does not have")
        for key, value in (service.get("environment") or {}).items():
            if name in ("auth-service", "task-service"):
                if key not in known:
                    problem(f"compose: {name} sets {key}, which the README does not document")
                if key.endswith("_FILE"):
                    secret = value.removeprefix("/run/secrets/")
                    if secret not in service.get("secrets", []):
                        problem(f"compose: {name}'s {key} names /run/secrets/{secret}, not one of its secrets")
    print(f"compose: {len(services)} services, {len(secrets)} secrets, references consistent" if not problems else "")


def load_manifests(directory):
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    if listed != present:
        problem(f"kubernetes: kustomization.yaml lists {sorted(listed)}, the directory has {sorted(present)}")
    docs = []
    for name in sorted(listed):
        docs += [d for d in yaml.safe_load_all((directory / name).read_text()) if d]
    return docs


def selects(selector, labels):
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        if expression["operator"] == "In" and labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def check_kubernetes(directory):
    docs = load_manifests(directory)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    known = documented_variables()
    secrets = {s["metadata"]["name"]: set((s.get("stringData") or {}) | (s.get("data") or {})) for s in by_kind.get("Secret", [])}
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    deployments = by_kind.get("Deployment", [])
    pods = {}  # name label -> named container ports
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        if not selects(spec["selector"], labels):
            problem(f"kubernetes: {name}'s selector does not select its own pods")
        for container in spec["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            pods[labels["app.kubernetes.io/name"]] = ports
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                grpc = container.get(probe, {}).get("grpc")
                if not grpc:
                    problem(f"kubernetes: {name} has no gRPC {probe}")
                elif grpc["port"] != ports.get("grpc"):
                    problem(f"kubernetes: {name}'s {probe} asks port {grpc['port']}, not its grpc port")
                elif grpc.get("service", "") not in ("", "liveness"):
                    problem(f"kubernetes: {name}'s {probe} asks for service {grpc['service']!r}, which health does not know")
            for env in container.get("env", []):
                if env["name"] not in known:
                    problem(f"kubernetes: {name} sets {env['name']}, which the README does not document")
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], set()):
                    problem(f"kubernetes: {name} reads {ref['name']}/{ref['key']}, which no Secret here holds")
                if env["name"] == "AUTH_SERVICE_URL":
                    host, port = re.match(r"http://([^.:]+)[^:]*:(\d+)$", env["value"]).groups()
                    target = services.get(host)
                    if not target or int(port) not in [p["port"] for p in target["spec"]["ports"]]:
                        problem(f"kubernetes: {name}'s AUTH_SERVICE_URL {env['value']} is no Service port here")
            resources = container.get("resources", {})
            for kind in ("cpu", "memory"):
                if kind not in resources.get("requests", {}) or kind not in resources.get("limits", {}):
                    problem(f"kubernetes: {name} has no {kind} request and limit")
    for service in services.values():
        name = service["metadata"]["name"]
        matched = [d for d in deployments if selects({"matchLabels": service["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])]
        if len(matched) != 1:
            problem(f"kubernetes: Service {name} selects {len(matched)} Deployments")
            continue
        ports = pods[matched[0]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]]
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports:
                problem(f"kubernetes: Service {name} targets port {port['targetPort']}, which its pods do not name")
    for budget in by_kind.get("PodDisruptionBudget", []):
        matched = [d for d in deployments if selects(budget["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        if len(matched) != 1 or budget["spec"]["minAvailable"] >= matched[0]["spec"]["replicas"]:
            problem(f"kubernetes: PodDisruptionBudget {budget['metadata']['name']} must cover one Deployment and allow a disruption")
    for policy in by_kind.get("NetworkPolicy", []):
        selected = [n for n in list(pods) + ["postgresql"] if selects(policy["spec"]["podSelector"], {"app.kubernetes.io/name": n})]
        if not selected:
            problem(f"kubernetes: NetworkPolicy {policy['metadata']['name']} selects no pod")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str) and any(port["port"] not in pods.get(n, {port["port"]: 0}) for n in selected):
                    problem(f"kubernetes: NetworkPolicy {policy['metadata']['name']} names port {port['port']}, which a selected pod lacks")
    if not problems:
        print(f"kubernetes: {len(docs)} objects, references consistent")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke(dockerfile, binaries, promtool):
    """Starts each image's binary as its stage would (its ENV, listen addresses moved to
    loopback ports), runs the stage's HEALTHCHECK command until it passes, scrapes /metrics and
    has promtool lint it, then stops the service with SIGTERM and expects a clean exit."""
    stages = dockerfile_stages(Path(dockerfile))
    binaries = Path(binaries).resolve()
    work = Path(tempfile.mkdtemp(prefix="todo-smoke-"))
    secret_file = work / "jwt-secret"
    secret_file.write_text(os.urandom(32).hex() + "\n")
    running = []
    auth_url = None
    try:
        for name, var in (("auth-service", "AUTH_LISTEN_ADDR"), ("task-service", "TASK_LISTEN_ADDR")):
            stage = stages[name]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "JWT_"))}
            env.update(stage["env"])
            grpc, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            env.update({var: grpc, "METRICS_ADDR": metrics, "JWT_SECRET_FILE": str(secret_file)})
            if auth_url:
                env["AUTH_SERVICE_URL"] = auth_url
            entrypoint = [str(binaries / Path(stage["entrypoint"][0]).name)] + stage["entrypoint"][1:]
            log = open(work / f"{name}.log", "w")
            process = subprocess.Popen(entrypoint, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, process))
            check = [str(binaries / Path(stage["healthcheck"][0]).name)] + stage["healthcheck"][1:]
            deadline = time.monotonic() + 30
            while subprocess.run(check, env=env, capture_output=True).returncode != 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    problem(f"smoke: {name}'s HEALTHCHECK never passed:\n{(work / f'{name}.log').read_text()}")
                    return
                time.sleep(0.2)
            print(f"smoke: {name}: HEALTHCHECK {' '.join(stage['healthcheck'][1:])} passes on {grpc}")
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:
                body = response.read()
                content_type = response.headers["Content-Type"]
            if not content_type.startswith("application/openmetrics-text"):
                problem(f"smoke: {name}'s /metrics answers {content_type}")
            lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
            findings = [f for f in (lint.stdout + lint.stderr).decode().splitlines() if f.strip()]
            text = body.decode()
            # promtool lints the classic text format, where a counter's HELP names the series
            # (`x_total`); OpenMetrics names the family (`x`), so promtool finds no help for
            # `x_total`. Only that finding is forgiven, and only where the family's HELP and
            # TYPE counter lines are there.
            def openmetrics_counter(finding):
                match = re.fullmatch(r"(\w+)_total no help text", finding.strip())
                return bool(match) and f"# HELP {match[1]} " in text and f"# TYPE {match[1]} counter\n" in text
            other = [f for f in findings if not openmetrics_counter(f)]
            if other:
                problem(f"smoke: promtool check metrics on {name}:\n" + "\n".join(other))
            else:
                print(f"smoke: {name}: /metrics ({len(body)} bytes) passes promtool check metrics")
            if name == "auth-service":
                auth_url = f"http://{grpc}"
        for name, process in reversed(running):
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
            if code != 0:
                problem(f"smoke: {name} exited with {code} on SIGTERM")
            else:
                print(f"smoke: {name}: SIGTERM, clean exit")
    finally:
        for _, process in running:
            if process.poll() is None:
                process.kill()


def main():
    mode = sys.argv[1]
    if mode == "compose":
        check_compose(sys.argv[2])
    elif mode == "kubernetes":
        check_kubernetes(sys.argv[2])
    elif mode == "smoke":
        smoke(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown mode {mode}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
