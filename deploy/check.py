#!/usr/bin/env python3
"""Checks gantry's cluster launch files without a cluster, a container engine or Slurm.

  .venv/bin/python deploy/check.py [--jobs-out DIR] [--bin DIR]

- Kubernetes (deploy/k8s): every document of every YAML file validates against the schemas of
  Kubernetes K8S_VERSION in strict mode (unknown fields fail), bundled by kubernetes-validate, so
  no network is needed. The kustomizations are resolved (resources, JSON patches) and each variant
  (the base, the TLS overlay), with the example Jobs and the Secret template beside it, is checked
  for agreement across files: selectors and pod labels, Service and container ports, probes,
  Secret and ConfigMap names and keys, mounted files named in flags, $(VAR) references, the
  coordinator URL the workers and clients use, NetworkPolicy selectors and ports, the job files'
  storage against the allow-lists, Prometheus scrape annotations against container ports. Where
  kubectl is installed, its kustomize must render what this script resolved. --jobs-out writes
  the job files found in ConfigMaps there, for the Rust test to parse with gantry's own job
  parser. --bin DIR (gantry's built binaries) checks every flag a manifest passes against the
  `--help` of the subcommand it runs.
- The Dockerfile (deploy/docker/Dockerfile, parsed with dockerfile-parse): two or more stages,
  every COPY source from the build context exists and is not excluded by .dockerignore, COPY
  --from names an earlier stage, the final stage runs as a non-root user (the manifests' uid),
  tells the launcher where libtorch is, and ships the binaries the manifests run.
- Shell: `bash -n` and shellcheck on the Slurm script and every deploy/**/*.sh and tests/run.sh.

Prints every problem found ("FAIL ...") and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import glob
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# The Kubernetes release whose API the manifests must fit (native gRPC probes need 1.27+).
K8S_VERSION = "1.30"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

problems: list[str] = []
# (where, command line) of every container, for --bin.
commands_seen: list[tuple[str, list[str]]] = []


def fail(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- Kubernetes ------------------------------------------------------------------------------


class Doc:
    """One Kubernetes object and the file it comes from."""

    def __init__(self, body: dict, origin: str):
        self.body = body
        self.origin = origin

    @property
    def kind(self) -> str:
        return self.body.get("kind", "?")

    @property
    def name(self) -> str:
        return (self.body.get("metadata") or {}).get("name", "?")

    def where(self) -> str:
        return f"{self.origin} {self.kind}/{self.name}"


def load_yaml(path: Path) -> list:
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(rel(path), f"not valid YAML: {e}")
        return []


def validate_schema(doc: Doc) -> None:
    try:
        kubernetes_validate.validate(doc.body, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(top)"
        fail(doc.where(), f"invalid for Kubernetes {K8S_VERSION} (strict): {path}: {e.message}")
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
        fail(doc.where(), e.message)
    except KeyError as e:
        fail(doc.origin, f"a document without {e} (apiVersion, kind and metadata.name are required)")


def json_patch(target: dict, ops: list, where: str) -> dict:
    """Applies RFC 6902 add/replace/remove operations (what kustomize's JSON patches use)."""
    result = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove") or "path" not in op:
            fail(where, f"unsupported patch operation {op!r} (add, replace, remove with a path)")
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = result
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            last = parts[-1]
            if isinstance(node, list):
                if op["op"] == "add":
                    node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
                elif op["op"] == "replace":
                    node[int(last)] = copy.deepcopy(op["value"])
                else:
                    del node[int(last)]
            else:
                if op["op"] in ("replace", "remove") and last not in node:
                    raise KeyError(last)
                if op["op"] == "remove":
                    del node[last]
                else:
                    node[last] = copy.deepcopy(op["value"])
        except (KeyError, IndexError, ValueError, TypeError) as e:
            fail(where, f"patch {op['op']} {op['path']} does not apply ({type(e).__name__}: {e})")
    return result


KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}


def kustomize(folder: Path, seen: set[Path]) -> list[Doc]:
    """The objects a kustomization folder produces (resources and JSON patches only)."""
    file = folder / "kustomization.yaml"
    docs = load_yaml(file)
    if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
        fail(rel(file), "expected one Kustomization document")
        return []
    spec = docs[0]
    for key in sorted(set(spec) - KUSTOMIZATION_KEYS):
        fail(rel(file), f"{key}: not modelled by deploy/check.py (it models {sorted(KUSTOMIZATION_KEYS)})")
    seen.add(file)
    objects: list[Doc] = []
    for entry in spec.get("resources") or []:
        path = (folder / entry).resolve()
        if path.is_dir() and (path / "kustomization.yaml").is_file():
            objects += kustomize(path, seen)
        elif path.is_file():
            seen.add(path)
            objects += [Doc(body, rel(path)) for body in load_yaml(path)]
        else:
            fail(rel(file), f"resource {entry} does not exist")
    for patch in spec.get("patches") or []:
        path = folder / patch.get("path", "")
        target = patch.get("target") or {}
        if not path.is_file():
            fail(rel(file), f"patch {patch.get('path')} does not exist")
            continue
        seen.add(path.resolve())
        ops = load_yaml(path)
        ops = ops[0] if len(ops) == 1 and isinstance(ops[0], list) else None
        if ops is None:
            fail(rel(path), "expected one YAML list of JSON patch operations")
            continue
        matches = [d for d in objects if d.kind == target.get("kind") and d.name == target.get("name")]
        if len(matches) != 1:
            fail(rel(file), f"patch {patch.get('path')}: target {target} matches {len(matches)} objects, expected 1")
            continue
        matches[0].body = json_patch(matches[0].body, ops, rel(path))
        matches[0].origin += f" + {rel(path)}"
    # Every manifest beside a kustomization belongs to it, or a reader wonders why it is not applied.
    for manifest in sorted(folder.glob("*.yaml")):
        if manifest.resolve() not in seen:
            fail(rel(manifest), f"not listed in {rel(file)}")
    return objects


def compare_with_kustomize(kubectl: str, folder: Path, objects: list[Doc]) -> None:
    """Where kubectl is installed: its kustomize must render what this script resolved."""
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        fail(rel(folder), f"kubectl kustomize failed: {result.stderr.strip()}")
        return
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    resolved = {(d.kind, d.name): d.body for d in objects}
    if rendered.keys() != resolved.keys():
        fail(rel(folder), f"kubectl kustomize renders {sorted(rendered)}, deploy/check.py resolved {sorted(resolved)}")
    for key in sorted(rendered.keys() & resolved.keys()):
        if rendered[key] != resolved[key]:
            fail(rel(folder), f"kubectl kustomize renders {key[0]}/{key[1]} otherwise than deploy/check.py resolves it")


def pod_template(doc: Doc) -> dict | None:
    spec = doc.body.get("spec") or {}
    if doc.kind in WORKLOAD_KINDS:
        return spec.get("template") or {}
    return None


def labels_match(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Variant:
    """One way to deploy: the objects of a kustomization, the examples and the Secret template."""

    def __init__(self, name: str, docs: list[Doc]):
        self.name = name
        self.docs = docs
        self.secrets = {d.name: d for d in docs if d.kind == "Secret"}
        self.config_maps = {d.name: d for d in docs if d.kind == "ConfigMap"}
        self.workloads = [d for d in docs if pod_template(d) is not None]
        # Filled in by check_variant: optional references to keys this variant lacks, and every
        # container's (where, workload, pod labels, expanded command line, container).
        self.optional_keys: list[tuple[str, str, str, str]] = []
        self.commands: list[tuple[str, Doc, dict, list[str], dict]] = []

    def where(self, doc: Doc) -> str:
        return f"[{self.name}] {doc.where()}"

    @staticmethod
    def keys(doc: Doc | None) -> set[str]:
        if doc is None:
            return set()
        return set(doc.body.get("data") or {}) | set(doc.body.get("stringData") or {})

    def pods(self, selector: dict) -> list[Doc]:
        return [
            w
            for w in self.workloads
            if labels_match(selector, (pod_template(w).get("metadata") or {}).get("labels") or {})
        ]

    def source_keys(self, kind: str, name: str) -> set[str] | None:
        """Keys of a Secret or ConfigMap, or None when it is not defined."""
        table = self.secrets if kind == "Secret" else self.config_maps
        return self.keys(table[name]) if name in table else None


def container_env(variant: Variant, container: dict, where: str) -> dict[str, str | None]:
    """A container's environment as far as the files tell: name -> value (None: not known here)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                name = source[key]["name"]
                keys = variant.source_keys(kind, name)
                if keys is None:
                    if not source[key].get("optional"):
                        fail(where, f"envFrom names {kind} {name}, which no manifest defines")
                    continue
                table = variant.config_maps if kind == "ConfigMap" else variant.secrets
                data = {**(table[name].body.get("data") or {}), **(table[name].body.get("stringData") or {})}
                for k in keys:
                    env[source.get("prefix", "") + k] = str(data[k]) if kind == "ConfigMap" else None
    for var in container.get("env") or []:
        name, value_from = var["name"], var.get("valueFrom")
        if value_from is None:
            env[name] = expand(str(var.get("value", "")), env, where)
            continue
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in value_from:
                ref = value_from[key]
                keys = variant.source_keys(kind, ref["name"])
                if keys is None:
                    fail(where, f"env {name} names {kind} {ref['name']}, which no manifest defines")
                elif ref["key"] not in keys:
                    if ref.get("optional"):
                        variant.optional_keys.append((kind, ref["name"], ref["key"], where))
                    else:
                        fail(
                            where,
                            f"env {name} names key {ref['key']} of {kind} {ref['name']}, which has {sorted(keys)}",
                        )
                else:
                    data = (variant.config_maps if kind == "ConfigMap" else variant.secrets)[ref["name"]].body
                    merged = {**(data.get("data") or {}), **(data.get("stringData") or {})}
                    env[name] = str(merged[ref["key"]]) if kind == "ConfigMap" else None
        if "fieldRef" in value_from or "resourceFieldRef" in value_from:
            env[name] = None
    return env


def expand(text: str, env: dict[str, str | None], where: str) -> str:
    """Kubernetes' $(VAR) expansion; a reference to an undefined variable is a problem."""

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in env:
            fail(where, f"$({name}) is not defined in the container's env or envFrom")
            return match.group(0)
        return env[name] if env[name] is not None else match.group(0)

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def flags(args: list[str]) -> dict[str, str]:
    """--name=value and --name value pairs of a command line (the last one of a name wins)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
                found[name] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                found[arg] = args[i + 1]
    return found


def check_mounted_file(variant: Variant, spec: dict, container: dict, path: str, what: str, where: str) -> None:
    """A file a flag names under a mounted Secret or ConfigMap volume must be one of its items."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = volumes.get(mount["name"], {})
        inner = path[len(prefix) :]
        for kind, key, name_key in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if key not in volume:
                continue
            source = volume[key]
            items = source.get("items")
            names = [i["path"] for i in items] if items else sorted(variant.source_keys(kind, source[name_key]) or [])
            if inner not in names:
                fail(
                    where,
                    f"{what} {path}: volume {mount['name']} ({kind} {source[name_key]}) mounts {names} at {prefix}",
                )
        return
    fail(where, f"{what} {path} lies in no volume mount of the container")


def check_workload(variant: Variant, doc: Doc, coordinator_urls: list[tuple[str, str]]) -> None:
    where = variant.where(doc)
    template = pod_template(doc)
    labels = (template.get("metadata") or {}).get("labels") or {}
    if labels.get(NAME_LABEL) != "gantry" or COMPONENT_LABEL not in labels:
        fail(where, f"pod labels {labels} lack {NAME_LABEL}: gantry and {COMPONENT_LABEL}")
    selector = (doc.body.get("spec") or {}).get("selector")
    if doc.kind != "Job" and selector is not None and not labels_match(selector, labels):
        fail(where, f"selector {selector} does not select its own pod labels {labels}")
    spec = template.get("spec") or {}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounted = set()
    for name, volume in volumes.items():
        for kind, key, name_key in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if key not in volume:
                continue
            source = volume[key]
            keys = variant.source_keys(kind, source[name_key])
            if keys is None:
                fail(where, f"volume {name} names {kind} {source[name_key]}, which no manifest defines")
                continue
            for item in source.get("items") or []:
                if item["key"] not in keys:
                    fail(
                        where,
                        f"volume {name} names key {item['key']} of {kind} {source[name_key]}, which has {sorted(keys)}",
                    )
    for container in spec.get("containers") or []:
        cwhere = f"{where} container {container.get('name')}"
        env = container_env(variant, container, cwhere)
        command = [
            expand(str(a), env, cwhere) for a in (container.get("command") or []) + (container.get("args") or [])
        ]
        found = flags(command)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        for mount in container.get("volumeMounts") or []:
            mounted.add(mount["name"])
            if mount["name"] not in volumes:
                fail(cwhere, f"mounts volume {mount['name']}, which the pod does not define")
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name) or {}
            for action in ("grpc", "tcpSocket", "httpGet"):
                if action in probe:
                    port = probe[action].get("port")
                    if port not in ports.values() and port not in ports:
                        fail(cwhere, f"{probe_name} {action} port {port} is not a container port ({ports})")
        # Files named by flags and variables must be mounted where they are said to be.
        for flag in ("--token-file", "--worker-token-file", "--tls-cert", "--tls-key", "--tls-ca"):
            if flag in found:
                check_mounted_file(variant, spec, container, found[flag], flag, cwhere)
        for arg in command:
            if arg.endswith(".toml") and arg.startswith("/"):
                check_mounted_file(variant, spec, container, arg, "job file", cwhere)
        # Where the clients of the coordinator (workers, its CLI; not `coordinator serve`, not
        # dataprep) reach it, and the CA they verify it with.
        binary = command[0].rsplit("/", 1)[-1] if command else ""
        client = binary == "worker" or (binary == "coordinator" and "serve" not in command)
        if client and env.get("GANTRY_TLS_CA"):
            check_mounted_file(variant, spec, container, env["GANTRY_TLS_CA"], "GANTRY_TLS_CA", cwhere)
        url = found.get("--coordinator") or env.get("GANTRY_COORDINATOR")
        if client and url is not None:
            coordinator_urls.append((cwhere, url))
            if url.startswith("https://") and not (found.get("--tls-ca") or env.get("GANTRY_TLS_CA")):
                fail(cwhere, f"reaches {url} without --tls-ca or GANTRY_TLS_CA")
        if "--advertise" in found:
            host, _, port = found["--advertise"].rpartition(":")
            if port.isdigit() and int(port) not in ports.values():
                fail(cwhere, f"--advertise port {port} is not a container port ({ports})")
            if "$(" in host and not re.fullmatch(r"\$\([A-Z_]+\)", host):
                fail(cwhere, f"--advertise host {host} is not a plain variable")
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        scrape_port = annotations.get("prometheus.io/port")
        if annotations.get("prometheus.io/scrape") == "true" and scrape_port is not None:
            if not scrape_port.isdigit() or int(scrape_port) not in ports.values():
                fail(cwhere, f"prometheus.io/port {scrape_port!r} is not a container port ({ports})")
        variant.commands.append((cwhere, doc, labels, command, container))
    for name in sorted(set(volumes) - mounted):
        fail(where, f"volume {name} is never mounted")


def check_variant(variant: Variant) -> None:
    names: dict[tuple, str] = {}
    for doc in variant.docs:
        meta = doc.body.get("metadata") or {}
        key = (doc.kind, meta.get("namespace"), doc.name)
        if key in names:
            fail(variant.where(doc), f"defined twice (also in {names[key]})")
        names[key] = doc.origin
        if (meta.get("labels") or {}).get(NAME_LABEL) != "gantry":
            fail(variant.where(doc), f"metadata.labels lacks {NAME_LABEL}: gantry")
        if doc.kind != "Namespace" and meta.get("namespace") != "gantry":
            fail(variant.where(doc), f"namespace is {meta.get('namespace')!r}, expected 'gantry'")
    if not any(d.kind == "Namespace" and d.name == "gantry" for d in variant.docs):
        fail(variant.name, "no Namespace gantry")

    coordinator_urls: list[tuple[str, str]] = []
    for doc in variant.workloads:
        check_workload(variant, doc, coordinator_urls)

    # Services: they select pods, and their target ports are those pods' container ports.
    services = [d for d in variant.docs if d.kind == "Service"]
    for service in services:
        spec = service.body.get("spec") or {}
        pods = variant.pods({"matchLabels": spec.get("selector") or {}})
        if not spec.get("selector") or not pods:
            fail(variant.where(service), f"selector {spec.get('selector')} matches no pod template")
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port["port"])
            containers = [c for p in pods for c in pod_template(p)["spec"]["containers"]]
            known = {(q.get("name"), q["containerPort"]) for c in containers for q in c.get("ports") or []}
            if not any(target in pair for pair in known):
                fail(
                    variant.where(service),
                    f"targetPort {target} is no container port of the pods it selects ({sorted(known, key=str)})",
                )

    # The coordinator: one replica, Recreate, and every client's URL names its Service and port.
    coordinators = [
        d
        for d in variant.workloads
        if (pod_template(d)["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "coordinator"
    ]
    if len(coordinators) != 1:
        fail(variant.name, f"{len(coordinators)} coordinator workloads, expected 1")
    for doc in coordinators:
        spec = doc.body["spec"]
        if spec.get("replicas") != 1 or (spec.get("strategy") or {}).get("type") != "Recreate":
            fail(variant.where(doc), "the coordinator must run as exactly one replica with strategy Recreate")
    coordinator_services = [
        s
        for s in services
        if any(c in variant.pods({"matchLabels": s.body["spec"].get("selector") or {}}) for c in coordinators)
    ]
    if not coordinator_urls:
        fail(variant.name, "no worker or client names the coordinator (--coordinator or GANTRY_COORDINATOR)")
    for cwhere, url in coordinator_urls:
        match = re.fullmatch(r"(https?)://([a-z0-9.-]+):(\d+)", url)
        ok = False
        if match:
            host, port = match.group(2), int(match.group(3))
            for s in coordinator_services:
                hosts = {s.name, f"{s.name}.gantry", f"{s.name}.gantry.svc", f"{s.name}.gantry.svc.cluster.local"}
                if host in hosts and port in [p["port"] for p in s.body["spec"].get("ports") or []]:
                    ok = True
        if not ok:
            services_text = [
                f"{s.name}:{[p['port'] for p in s.body['spec'].get('ports') or []]}" for s in coordinator_services
            ]
            fail(
                cwhere,
                f"coordinator URL {url} does not name a Service of the coordinator and its port ({services_text})",
            )

    # Workers: one GPU each, time to checkpoint on SIGTERM, advertising their pod IP.
    for cwhere, doc, labels, command, container in variant.commands:
        if labels.get(COMPONENT_LABEL) != "worker":
            continue
        limits = (container.get("resources") or {}).get("limits") or {}
        if str(limits.get("nvidia.com/gpu")) != "1":
            fail(cwhere, f"resources.limits nvidia.com/gpu is {limits.get('nvidia.com/gpu')!r}, expected 1")
        grace = pod_template(doc)["spec"].get("terminationGracePeriodSeconds", 30)
        if grace < 120:
            fail(cwhere, f"terminationGracePeriodSeconds {grace} leaves too little time to checkpoint")
        env = {
            v["name"]: v.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for v in container.get("env") or []
        }
        advertise = flags(command).get("--advertise", "")
        var = re.match(r"\$\(([A-Z_]+)\)", advertise)
        if not var or env.get(var.group(1)) != "status.podIP":
            fail(cwhere, f"--advertise {advertise!r} is not the pod IP (a variable from fieldRef status.podIP)")

    # NetworkPolicies: they select pods that exist, admit pods that exist, on ports those have.
    for policy in (d for d in variant.docs if d.kind == "NetworkPolicy"):
        spec = policy.body["spec"]
        selected = variant.pods(spec.get("podSelector") or {})
        if not selected:
            fail(variant.where(policy), f"podSelector {spec.get('podSelector')} selects no pod template")
        ports = {
            (q.get("name"), q["containerPort"])
            for p in selected
            for c in pod_template(p)["spec"]["containers"]
            for q in c.get("ports") or []
        }
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                if "podSelector" in peer and "namespaceSelector" not in peer and not variant.pods(peer["podSelector"]):
                    fail(
                        variant.where(policy), f"ingress from podSelector {peer['podSelector']} selects no pod template"
                    )
            for port in rule.get("ports") or []:
                if "port" in port and not any(port["port"] in pair for pair in ports):
                    fail(
                        variant.where(policy),
                        f"ingress port {port['port']} is not a port of the selected pods ({sorted(ports, key=str)})",
                    )


def allowed(url: str, prefixes: list[str]) -> bool:
    return any(url.rstrip("/") + "/" == p or (url.rstrip("/") + "/").startswith(p.rstrip("/") + "/") for p in prefixes)


def check_jobs(variant: Variant, jobs_out: Path | None) -> None:
    """Job files in ConfigMaps: TOML whose storage lies in the allow-lists, on workers that exist."""
    config = variant.config_maps.get("gantry-config")
    data = (config.body.get("data") or {}) if config else {}
    read = [p for p in str(data.get("GANTRY_ALLOW_READ", "")).split(",") if p]
    write = [p for p in str(data.get("GANTRY_ALLOW_WRITE", "")).split(",") if p]
    workers = sum(
        d.body["spec"].get("replicas", 1)
        for d in variant.workloads
        if (pod_template(d)["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "worker"
    )
    for name, doc in sorted(variant.config_maps.items()):
        for key, text in sorted((doc.body.get("data") or {}).items()):
            if not key.endswith(".toml"):
                continue
            where = f"[{variant.name}] {doc.where()} {key}"
            try:
                job = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                fail(where, f"not valid TOML: {e}")
                continue
            data_url = (job.get("data") or {}).get("url", "")
            output_url = (job.get("output") or {}).get("url", "")
            if (read or write) and not allowed(data_url, read + write):
                fail(where, f"data.url {data_url} is outside GANTRY_ALLOW_READ/GANTRY_ALLOW_WRITE {read + write}")
            if write and not allowed(output_url, write):
                fail(where, f"output.url {output_url} is outside GANTRY_ALLOW_WRITE {write}")
            wanted = (job.get("job") or {}).get("workers", 1)
            if wanted > workers:
                fail(where, f"job.workers is {wanted} but the manifests start {workers} workers")
            if jobs_out is not None:
                (jobs_out / f"{name}.{key}").write_text(text)


def check_kubernetes(jobs_out: Path | None) -> tuple[set[str], set[int]]:
    """Returns the binaries the manifests run and the uids they run as."""
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    if not files:
        fail(rel(K8S), "no manifests")
    patch_files = set()
    for folder in {f.parent for f in files if f.name == "kustomization.yaml"}:
        for doc in load_yaml(folder / "kustomization.yaml"):
            for patch in doc.get("patches") or []:
                patch_files.add((folder / patch.get("path", "")).resolve())
    # Every object of every file (the patches are lists of operations, checked when applied).
    for file in files:
        if file.name == "kustomization.yaml" or file.resolve() in patch_files:
            continue
        for body in load_yaml(file):
            if not isinstance(body, dict):
                fail(rel(file), "a document that is not a mapping")
                continue
            validate_schema(Doc(body, rel(file)))

    extra = []
    for file in sorted((K8S / "examples").glob("*.yaml")) + [K8S / "secrets.example.yaml"]:
        extra += [Doc(body, rel(file)) for body in load_yaml(file)]
    variants = []
    kubectl = shutil.which("kubectl")
    for folder in sorted(f.parent for f in files if f.name == "kustomization.yaml"):
        objects = kustomize(folder, set())
        if kubectl is not None:
            compare_with_kustomize(kubectl, folder, objects)
        if folder != K8S / "base":
            for doc in objects:
                if "+" in doc.origin:  # patched: validate the result too
                    validate_schema(doc)
        variants.append(Variant(rel(folder), objects + copy.deepcopy(extra)))
    binaries, uids = set(), set()
    for variant in variants:
        check_variant(variant)
        check_jobs(variant, jobs_out if variant.name == "deploy/k8s/base" else None)
        for cwhere, doc, _, command, _ in variant.commands:
            if command:
                binaries.add(command[0])
                commands_seen.append((cwhere, command))
            context = pod_template(doc)["spec"].get("securityContext") or {}
            if "runAsUser" in context:
                uids.add(context["runAsUser"])
    # An optional key missing from one variant must exist in another (a typo otherwise).
    for variant in variants:
        for kind, name, key, where in variant.optional_keys:
            if not any(key in (v.source_keys(kind, name) or set()) for v in variants):
                fail(where, f"optional key {key} of {kind} {name} exists in no variant")
    return binaries, uids


# --- Dockerfile ------------------------------------------------------------------------------


def dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.is_file():
        return []
    return [
        line.strip().rstrip("/") for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    for pattern in patterns:
        pattern = pattern.removeprefix("**/")
        for i in range(len(parts)):
            if fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(parts[i], pattern):
                return True
    return False


def check_dockerfile(binaries: set[str], uids: set[int]) -> None:
    where = rel(DOCKERFILE)
    if not DOCKERFILE.is_file():
        fail(where, "missing")
        return
    parser = DockerfileParser(str(DOCKERFILE))
    stages: list[dict] = []
    for instruction in parser.structure:
        kind, value = instruction["instruction"], instruction["value"]
        line = f"{where}:{instruction['startline'] + 1}"
        if kind == "FROM":
            words = value.split()
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(
                {
                    "image": words[0],
                    "alias": alias,
                    "user": None,
                    "env": {},
                    "runs": [],
                    "copies": [],
                    "copies_from": [],
                }
            )
        elif not stages:
            continue
        elif kind == "USER":
            stages[-1]["user"] = value.strip()
        elif kind == "ENV":
            for word in shlex.split(value):
                if "=" in word:
                    name, _, setting = word.partition("=")
                    stages[-1]["env"][name] = setting
        elif kind == "RUN":
            stages[-1]["runs"].append(value)
        elif kind in ("COPY", "ADD"):
            words = json.loads(value) if value.lstrip().startswith("[") else shlex.split(value)
            options = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if len(paths) < 2:
                fail(line, f"{kind} {value}: needs a source and a destination")
                continue
            source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
            if source_stage is not None:
                if source_stage not in [s["alias"] for s in stages[:-1]]:
                    fail(line, f"{kind} --from={source_stage} names no earlier stage")
                stages[-1]["copies_from"] += [(source, paths[-1]) for source in paths[:-1]]
                continue
            for source in paths[:-1]:
                matches = glob.glob(str(ROOT / source))
                if not matches:
                    fail(line, f"{kind} source {source} does not exist in the repository")
                elif ignored(source, dockerignore()):
                    fail(line, f"{kind} source {source} is excluded by .dockerignore")
            stages[-1]["copies"] += paths[:-1]
    if len(stages) < 2:
        fail(where, f"{len(stages)} stage(s); expected a build stage and a runtime stage")
        return
    final = stages[-1]
    user = (final["user"] or "root").split(":")[0]
    if user in ("root", "0"):
        fail(where, f"the final stage runs as {final['user'] or 'root (no USER)'}; expected a non-root USER")
    elif user.isdigit() and uids and uids != {int(user)}:
        fail(where, f"the final stage's USER {user} differs from the manifests' runAsUser {sorted(uids)}")
    if not ({"GANTRY_LIBTORCH", "GANTRY_PYTHON"} & set(final["env"])):
        fail(where, "the final stage sets neither GANTRY_LIBTORCH nor GANTRY_PYTHON for the launcher")
    # The rust image is at least the workspace's rust-version.
    cargo = (ROOT / "Cargo.toml").read_text()
    want = re.search(r'^rust-version\s*=\s*"([0-9.]+)"', cargo, re.M)
    for stage in stages:
        match = re.fullmatch(r"rust:(\d+)\.(\d+)(?:\.(\d+))?(-.*)?", stage["image"])
        if match and want:
            have = tuple(int(x or 0) for x in match.groups()[:3])
            need = tuple(int(x) for x in (want.group(1).split(".") + ["0"])[:3])
            if have < need:
                fail(where, f"{stage['image']} is older than the workspace's rust-version {want.group(1)}")
    # The binaries the manifests run are those deploy/dist.sh packs into /opt/gantry.
    dist_runs = [r for s in stages for r in s["runs"] if "deploy/dist.sh" in r]
    if not dist_runs:
        fail(where, "no RUN of deploy/dist.sh")
    else:
        words = shlex.split(dist_runs[-1].split("deploy/dist.sh", 1)[1])
        out = flags(words).get("--out", "target/dist")
        packed = {w for w in words if not w.startswith("--") and w not in flags(words).values()}
        # Where the final stage copies the dist folder to.
        shipped = [dest.rstrip("/") for source, dest in final["copies_from"] if source.rstrip("/") == out.rstrip("/")]
        if not shipped:
            fail(where, f"the final stage does not copy deploy/dist.sh's {out} from the build stage")
        for binary in sorted(binaries):
            folder, _, name = binary.rpartition("/bin/")
            if folder not in shipped or name not in packed:
                fail(
                    where,
                    f"the manifests run {binary}; the image has {sorted(packed)} in {[f + '/bin' for f in shipped]}",
                )
    # Every pinned Python package of a RUN is pinned the same in requirements.txt or bootstrap.sh.
    pins = (ROOT / "deploy" / "requirements.txt").read_text() + (ROOT / "deploy" / "bootstrap.sh").read_text()
    for stage in stages:
        for run in stage["runs"]:
            for pin in re.findall(r"\b[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", run):
                if pin not in pins:
                    fail(where, f"RUN pins {pin}, which neither deploy/requirements.txt nor deploy/bootstrap.sh pins")


# --- Shell -----------------------------------------------------------------------------------


def check_shell() -> None:
    scripts = sorted({*ROOT.glob("deploy/**/*.sh"), *ROOT.glob("deploy/**/*.sbatch"), ROOT / "tests" / "run.sh"})
    if not any(s.suffix == ".sbatch" for s in scripts):
        fail("deploy/slurm", "no .sbatch script")
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            fail(rel(script), f"bash -n: {result.stderr.strip()}")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        fail("shellcheck", "not installed (deploy/bootstrap.sh installs it; or apt-get install shellcheck)")
        return
    # From the root, so `source` directives and source-path=SCRIPTDIR resolve as in an editor.
    result = subprocess.run(
        [shellcheck, "--external-sources", *[rel(s) for s in scripts]], capture_output=True, text=True, cwd=ROOT
    )
    if result.returncode != 0:
        fail("shellcheck", "\n" + (result.stdout + result.stderr).strip())


def help_text(binary: Path, chain: list[str]) -> str:
    result = subprocess.run([str(binary), *chain, "--help"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def check_flags(bin_dir: Path, commands: list[tuple[str, list[str]]]) -> None:
    """Every --flag a manifest passes exists in the --help of the subcommand it runs."""
    for where, command in commands:
        if not command:
            continue
        binary = bin_dir / command[0].rsplit("/", 1)[-1]
        if not binary.is_file():
            fail(where, f"runs {command[0]}, which is not one of the built binaries in {bin_dir}")
            continue
        chain: list[str] = []
        for word in (a for a in command[1:] if not a.startswith("-")):
            listed = help_text(binary, chain).partition("Commands:")[2].partition("Options:")[0]
            if not re.search(rf"^\s+{re.escape(word)}\s", listed, re.MULTILINE):
                break
            chain.append(word)
        text = help_text(binary, chain)
        for arg in command[1:]:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and not re.search(rf"{re.escape(flag)}[\s=<,]", text):
                fail(where, f"passes {flag}, which `{binary.name} {' '.join(chain)}` does not have")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs-out", type=Path, help="write the job files of the ConfigMaps here")
    parser.add_argument("--bin", type=Path, help="gantry's built binaries: check the manifests' flags")
    args = parser.parse_args()
    if args.jobs_out is not None:
        args.jobs_out.mkdir(parents=True, exist_ok=True)
    binaries, uids = check_kubernetes(args.jobs_out)
    if args.bin is not None:
        check_flags(args.bin, commands_seen)
    check_dockerfile(binaries, uids)
    check_shell()
    problems[:] = list(dict.fromkeys(problems))  # a base file is checked once per variant
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"deploy check: {len(problems)} problem(s)")
        return 1
    print(f"deploy check: ok (Kubernetes {K8S_VERSION} schemas, strict; cross-file references; Dockerfile; shell)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
