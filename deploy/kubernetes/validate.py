#!/usr/bin/env python3
"""Validates deploy/kubernetes offline, as CI does (`cargo xtask deploy-check`).

- The core kinds (Namespace, ConfigMap, Deployment, Service, PodDisruptionBudget) against
  Kubernetes' own OpenAPI schemas, strictly (an unknown field is an error), with
  kubernetes-validate (PyPI).
- The ScaledObject against KEDA's published CRD (crds/keda.sh_scaledobjects.yaml), with
  every object that lists its properties closed (as `kubectl apply` with strict field
  validation would refuse an unknown field instead of pruning it).
- That the objects fit together: selectors, ports, probes, the mounted app, the scaling
  target and bounds, and that the ConfigMap's weir.toml is the example app's, unchanged.

Exits 1 naming every problem found.
"""

import copy
import pathlib
import re
import sys
import tomllib

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.34.0"
HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORE_KINDS = {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def closed(schema):
    """The schema with additionalProperties: false wherever it lists properties and
    neither allows more nor keeps unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def load_objects():
    objects = []
    for path in sorted(HERE.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                objects.append((path.name, document))
    return objects


def validate_core(name, obj):
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        problem(name, f"{obj['kind']}: {error.message} at {'/'.join(map(str, error.path))}")
    except kubernetes_validate.SchemaNotFoundError as error:
        problem(name, f"no schema for {obj['apiVersion']} {obj['kind']}: {error}")


def crd_schema(crd_file, version):
    crd = yaml.safe_load((HERE / "crds" / crd_file).read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return closed(served["schema"]["openAPIV3Schema"])
    raise SystemExit(f"{crd_file} has no version {version}")


def validate_custom(name, obj):
    group, _, version = obj["apiVersion"].partition("/")
    if (group, obj["kind"]) != ("keda.sh", "ScaledObject"):
        problem(name, f"no schema kept for {obj['apiVersion']} {obj['kind']}")
        return
    schema = crd_schema("keda.sh_scaledobjects.yaml", version)
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
        problem(name, f"ScaledObject: {error.message} at /{'/'.join(map(str, error.path))}")


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_together(objects):
    by_kind = {}
    for name, obj in objects:
        by_kind.setdefault(obj["kind"], []).append((name, obj))

    def one(kind):
        found = by_kind.get(kind, [])
        if len(found) != 1:
            problem("deploy/kubernetes", f"expected one {kind}, found {len(found)}")
            return None, None
        return found[0]

    namespaces = {obj["metadata"]["name"] for _, obj in by_kind.get("Namespace", [])}
    for name, obj in objects:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] != "Namespace" and ns not in namespaces:
            problem(name, f"{obj['kind']} is in namespace {ns!r}, which is not declared")

    dname, deployment = one("Deployment")
    if deployment is None:
        return
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    if not matches(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        problem(dname, "the selector does not match the pod template's labels")
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    listen_port = int(env["WEIR_LISTEN"].rsplit(":", 1)[1])
    if ports.get("http") != listen_port:
        problem(dname, f"port http is {ports.get('http')}, weir listens on {listen_port}")
    if not env.get("WEIR_ADVERTISE_URL", "").endswith(f":{listen_port}"):
        problem(dname, "WEIR_ADVERTISE_URL does not name the listening port")
    if not re.match(r"^(nats|tls)://", env.get("WEIR_BACKEND", "")):
        problem(dname, "WEIR_BACKEND does not name a NATS server: a fleet needs a shared log")
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http", listen_port):
            problem(dname, f"{probe} should GET {path} on the http port")
    if "memory" not in container.get("resources", {}).get("requests", {}):
        problem(dname, "no memory request")

    # The app: the ConfigMap's weir.toml, mounted where WEIR_APP points.
    cname, configmap = one("ConfigMap")
    if configmap is not None:
        example = (ROOT / "examples/orders/weir.toml").read_text()
        if configmap["data"].get("weir.toml") != example:
            problem(cname, "weir.toml is not examples/orders/weir.toml (copy it in again)")
        volumes = {
            v["name"]: v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v
        }
        mounted = [
            m
            for m in container["volumeMounts"]
            if volumes.get(m["name"]) == configmap["metadata"]["name"]
        ]
        if not any(
            m["mountPath"] == env.get("WEIR_APP") and m.get("subPath") == "weir.toml"
            for m in mounted
        ):
            problem(dname, f"the ConfigMap's weir.toml is not mounted at WEIR_APP ({env.get('WEIR_APP')})")

    sname, service = one("Service")
    if service is not None:
        if not matches(service["spec"]["selector"], pod_labels):
            problem(sname, "the selector matches no worker pod")
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
                problem(sname, f"targetPort {port['targetPort']} is no container port")

    pname, pdb = one("PodDisruptionBudget")
    if pdb is not None and not matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        problem(pname, "the selector matches no worker pod")

    kname, scaled = one("ScaledObject")
    if scaled is not None:
        target = scaled["spec"]["scaleTargetRef"]
        if (target.get("kind", "Deployment"), target["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problem(kname, "scaleTargetRef is not the weir Deployment")
        manifest = tomllib.loads((ROOT / "examples/orders/weir.toml").read_text())
        for trigger in scaled["spec"]["triggers"]:
            query = trigger["metadata"].get("query", "")
            if "weir_consumer_lag_events" not in query:
                problem(kname, "a trigger does not read weir_consumer_lag_events")
                continue
            group = re.search(r'group="([^"]+)"', query)
            pipelines = {p.get("group", n): p for n, p in manifest["pipelines"].items()}
            if group is None or group.group(1) not in pipelines:
                problem(kname, f"the query names no pipeline group of the app: {query}")
                continue
            source = pipelines[group.group(1)]["from"]
            partitions = manifest["topics"][source]["partitions"]
            if scaled["spec"]["maxReplicaCount"] > partitions:
                problem(kname, f"maxReplicaCount is above {source}'s {partitions} partitions")


def main():
    objects = load_objects()
    for name, obj in objects:
        if obj["kind"] in CORE_KINDS:
            validate_core(name, obj)
        else:
            validate_custom(name, obj)
    check_together(objects)
    if problems:
        print("deploy/kubernetes does not validate:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    kinds = ", ".join(sorted(obj["kind"] for _, obj in objects))
    print(f"deploy/kubernetes: {len(objects)} objects valid ({kinds}; Kubernetes {KUBERNETES_VERSION}, KEDA CRD)")


if __name__ == "__main__":
    main()
