#!/usr/bin/env python3
"""What the schemas cannot see in the deployment files (run by .ci/deploy-lint).

usage: deploy_check.py K8S_DIR OUT_DIR

- k8s/cloudrun-service.yaml is a Cloud Run (Knative serving.knative.dev/v1)
  Service, for which kubernetes-validate has no schema. Its envelope is
  checked against cloudrun-service.schema.json (ours); its pod spec
  (containers, probes, env, volumes) against the Kubernetes core Pod schema,
  strictly, through kubernetes_validate; and Cloud Run's multi-container
  rules by hand.
- The manifests and the proxy.toml they run must agree: ports, probe ports,
  the config's mount path, the spool's volume, the admin token, the backend's
  port, the shutdown timeline and the memory budgets.
- k8s/kustomization.yaml must list every Kubernetes manifest.
- The ConfigMap's proxy.toml is written to OUT_DIR/configmap-proxy.toml, for
  `leafcache check-config`, and the number of the ConfigMap's line that holds
  its first line to OUT_DIR/configmap-proxy.toml.line.

Exits 1 with one line per problem.
"""

import ipaddress
import json
import os
import re
import sys
import tomllib

import jsonschema
import kubernetes_validate.utils as kv
import yaml

# Kubernetes versions the manifests are written for: the oldest (the preStop
# `sleep` action needs 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", kv.latest_version()]

MIB = 1 << 20
# The memory budget of a leafcache process (see k8s/cloudrun-proxy.toml):
# peak RSS of the 30 s soak (81 MiB, bench/README.md) rounded up, the L1 tier
# with per-entry overhead, ~1 KiB per queued event, one answer copy per
# request in flight.
BASE_RSS = 96 * MIB
L1_OVERHEAD = 1.25
QUEUED_EVENT_BYTES = 1024
# Kubernetes does not bound concurrency per pod as Cloud Run does; budget for
# this many answers being copied at once.
K8S_IN_FLIGHT = 32
# leafcache's grace for requests in flight (src/server.rs GRACE) and the time
# allowed for the final event flush.
DRAIN_GRACE_S = 10
FLUSH_S = 5
# The image's state directory, owned by the leafcache user (Dockerfile).
IMAGE_STATE_DIR = "/var/lib/leafcache"

# The container fields Cloud Run takes (it rejects the rest of a Kubernetes
# container, e.g. lifecycle or securityContext), and the revision fields that
# are Knative's rather than a pod spec's.
CLOUD_RUN_CONTAINER_FIELDS = {
    "name", "image", "command", "args", "env", "resources", "ports",
    "volumeMounts", "workingDir", "livenessProbe", "startupProbe",
}
KNATIVE_ONLY_SPEC_FIELDS = {"containerConcurrency", "timeoutSeconds"}

# The Service's envelope; its pod spec is checked against the core schema.
with open(os.path.join(os.path.dirname(__file__), "cloudrun-service.schema.json")) as f:
    CLOUD_RUN_SCHEMA = json.load(f)

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load_yaml(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def size(text):
    """A leafcache size ("512MiB", "64KiB", "1MB", 0) in bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
             "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    if not m or m.group(2).lower() not in units:
        raise ValueError(f"invalid size {text!r}")
    return int(m.group(1)) * units[m.group(2).lower()]


def quantity(text):
    """A Kubernetes memory or storage quantity ("768Mi", "1Gi", "1G") in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    units = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    if not m:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(m.group(1)) * units[m.group(2)]


def addr(text):
    """(ip, port) of "IP:PORT" or "[v6]:PORT"."""
    host, _, port = text.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")), int(port)


def upstream_port(url):
    m = re.fullmatch(r"http://([^/:]+|\[[^\]]+\])(?::(\d+))?/?", url)
    return (m.group(1), int(m.group(2) or 80)) if m else (None, None)


def memory_budget(cfg, in_flight):
    cache, events = cfg.get("cache", {}), cfg.get("events", {})
    return (BASE_RSS
            + L1_OVERHEAD * size(cache.get("l1_max_bytes", "64MiB"))
            + QUEUED_EVENT_BYTES * events.get("queue_capacity", 100000)
            + in_flight * size(cache.get("max_object_bytes", "1MiB")))


def container(spec, name):
    return next((c for c in spec.get("containers", []) if c.get("name") == name), None)


def env_value(c, name):
    for e in c.get("env", []):
        if e.get("name") == name:
            return e.get("value", e.get("valueFrom"))
    return None


def config_path(c, where):
    args = c.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        problem(where, "leafcache is not given --config FILE")
        return None
    return args[args.index("--config") + 1]


def port_of(c, ref):
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(ref, int):
        return ref
    return next((p["containerPort"] for p in c.get("ports", []) if p.get("name") == ref), None)


def probe_port(c, probe):
    action = next((probe[k] for k in ("httpGet", "tcpSocket", "grpc") if k in probe), {})
    return port_of(c, action.get("port")) if "port" in action else None


def check_common(where, cfg, c, spec):
    """Rules shared by both platforms, for leafcache container c running cfg."""
    admin_ip, admin_port = addr(cfg.get("admin_listen", "127.0.0.1:9091"))
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in c and probe_port(c, c[kind]) != admin_port:
            problem(where, f"leafcache {kind} does not probe admin_listen's port {admin_port}")
    if not admin_ip.is_loopback and env_value(c, "LEAFCACHE_ADMIN_TOKEN") is None \
            and "admin_token" not in cfg:
        problem(where, "admin_listen is not loopback but no LEAFCACHE_ADMIN_TOKEN is set")
    host, port = upstream_port(cfg.get("upstream", {}).get("url", "http://127.0.0.1:8000"))
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        problem(where, f"[upstream] url should be the backend on loopback, not {host}")
    backend = container(spec, "backend")
    if backend is None:
        problem(where, "no container named backend")
    elif env_value(backend, "PORT") not in (None, str(port)):
        problem(where, f"backend PORT {env_value(backend, 'PORT')} is not [upstream] url's {port}")
    spool = cfg.get("events", {}).get("spool_dir", "spool")
    if not os.path.isabs(spool):
        problem(where, f"spool_dir {spool!r} is relative to the read-only config mount")
    return spool


def check_config_mount(where, c, spec, path, source_ok):
    """The volume mounted at path's folder provides path's file name."""
    folder, name = os.path.split(path)
    mount = next((m for m in c.get("volumeMounts", []) if m.get("mountPath") == folder), None)
    volume = mount and next((v for v in spec.get("volumes", [])
                             if v.get("name") == mount.get("name")), None)
    if not volume or not source_ok(volume, name):
        problem(where, f"no volume provides {path}")


def check_kubernetes(k8s):
    docs = {}
    for f in sorted(os.listdir(k8s)):
        if f.endswith(".yaml") and f not in ("kustomization.yaml", "cloudrun-service.yaml"):
            docs[f] = load_yaml(os.path.join(k8s, f))
    kustomization = load_yaml(os.path.join(k8s, "kustomization.yaml"))[0]
    listed = set(kustomization.get("resources", []))
    for f in sorted(set(docs) ^ listed):
        state = "not listed" if f in docs else "listed but missing"
        problem("kustomization.yaml", f"{f} is {state}")

    by_kind = {}
    for f, ds in docs.items():
        for d in ds:
            by_kind.setdefault(d.get("kind"), []).append((f, d))
    for kind in ("ConfigMap", "Deployment", "CronJob"):
        if len(by_kind.get(kind, [])) != 1:
            problem(k8s, f"expected one {kind}, found {len(by_kind.get(kind, []))}")
            return
    (cm_file, cm), = by_kind["ConfigMap"]
    (dep_file, dep), = by_kind["Deployment"]
    (cj_file, cj), = by_kind["CronJob"]
    cfg = tomllib.loads(cm["data"]["proxy.toml"])
    spec = dep["spec"]["template"]["spec"]
    lc = container(spec, "leafcache")
    where = f"{dep_file} (with {cm_file})"
    if lc is None:
        problem(dep_file, "no container named leafcache")
        return

    def from_configmap(volume, name):
        return volume.get("configMap", {}).get("name") == cm["metadata"]["name"] \
            and name in cm["data"]

    path = config_path(lc, where)
    if path:
        check_config_mount(where, lc, spec, path, from_configmap)
    job = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if path and path not in " ".join(job["containers"][0].get("args", [])):
        problem(cj_file, f"the export does not read {path}")
    elif path:
        check_config_mount(cj_file, job["containers"][0], job, path, from_configmap)

    ports = {p["name"]: p["containerPort"] for p in lc.get("ports", [])}
    if addr(cfg.get("listen", "0.0.0.0:8080"))[1] != ports.get("http"):
        problem(where, "listen's port is not the container port named http")
    if addr(cfg.get("admin_listen", "127.0.0.1:9091"))[1] != ports.get("admin"):
        problem(where, "admin_listen's port is not the container port named admin")
    for f, svc in by_kind.get("Service", []):
        for p in svc["spec"]["ports"]:
            if port_of(lc, p["targetPort"]) is None:
                problem(f, f"targetPort {p['targetPort']} is not a leafcache port")

    spool = check_common(where, cfg, lc, spec)
    mount = next((m for m in lc.get("volumeMounts", []) if m["mountPath"] == spool), None)
    volume = mount and next((v for v in spec["volumes"] if v["name"] == mount["name"]), None)
    spool_max = size(cfg.get("events", {}).get("spool_max_bytes", "1GiB"))
    if not volume or "emptyDir" not in volume:
        problem(where, f"spool_dir {spool} is not an emptyDir mount")
    elif quantity(volume["emptyDir"].get("sizeLimit", "0")) <= spool_max:
        problem(where, "the spool emptyDir's sizeLimit must exceed spool_max_bytes "
                       "(or the pod is evicted)")

    limit = quantity(lc["resources"]["limits"]["memory"])
    need = memory_budget(cfg, K8S_IN_FLIGHT)
    if need > limit:
        problem(where, f"leafcache's memory budget {need / MIB:.0f} MiB exceeds "
                       f"its limit {limit / MIB:.0f} MiB")

    # Shutdown: leafcache's preStop, its drain and flush fit in the grace
    # period, and the backend stays up until leafcache has drained.
    def pre_stop(c):
        return c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drained = pre_stop(lc) + DRAIN_GRACE_S
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if drained + FLUSH_S > grace:
        problem(where, f"terminationGracePeriodSeconds {grace} < "
                       f"preStop + drain + flush {drained + FLUSH_S}")
    backend = container(spec, "backend")
    if backend and pre_stop(backend) < drained:
        problem(where, f"the backend's preStop ({pre_stop(backend)} s) ends "
                       f"before leafcache has drained ({drained} s)")

    out = os.path.join(sys.argv[2], "configmap-proxy.toml")
    with open(out, "w") as f:
        f.write(cm["data"]["proxy.toml"])
    # Where the file starts in the ConfigMap, to translate check-config's
    # line numbers.
    with open(os.path.join(k8s, cm_file)) as f:
        start = next((n + 2 for n, line in enumerate(f) if line.strip().startswith("proxy.toml:")), 1)
    with open(out + ".line", "w") as f:
        f.write(f"{start}\n")


def check_cloud_run(k8s):
    f = "cloudrun-service.yaml"
    (svc,) = load_yaml(os.path.join(k8s, f))
    try:
        jsonschema.Draft202012Validator(CLOUD_RUN_SCHEMA).validate(svc)
    except jsonschema.ValidationError as e:
        problem(f, f"{'.'.join(map(str, e.path))}: {e.message}")
        return
    template = svc["spec"]["template"]
    spec = template["spec"]

    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": svc["metadata"]["name"], **template.get("metadata", {})},
           "spec": {k: v for k, v in spec.items() if k not in KNATIVE_ONLY_SPEC_FIELDS}}
    for version in K8S_VERSIONS:
        try:
            kv.validate(pod, version, strict=True)
        except kv.ValidationError as e:
            problem(f, f"pod spec against Kubernetes {e.version}: "
                       f"{'.'.join(map(str, e.path))}: {e.message}")

    containers = spec["containers"]
    names = [c.get("name") for c in containers]
    if None in names or len(set(names)) != len(names):
        problem(f, "every container needs a unique name")
    for c in containers:
        for extra in sorted(set(c) - CLOUD_RUN_CONTAINER_FIELDS):
            problem(f, f"container {c.get('name')}: Cloud Run does not support {extra}")
        limits = c.get("resources", {}).get("limits", {})
        if "cpu" not in limits or "memory" not in limits:
            problem(f, f"container {c.get('name')}: set resources.limits cpu and memory")
        probe = c.get("startupProbe", {})
        if probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) > 240:
            problem(f, f"container {c.get('name')}: a startup probe may take at most 240 s")
    ingress = [c for c in containers if c.get("ports")]
    if [c.get("name") for c in ingress] != ["leafcache"]:
        problem(f, "leafcache must be the only container with ports (the ingress container)")
        return
    lc = ingress[0]
    if len(lc["ports"]) != 1 or lc["ports"][0].get("name", "http1") not in ("http1", "h2c"):
        problem(f, "the ingress container has one port, named http1 or h2c")
    if env_value(lc, "PORT") is not None:
        problem(f, "PORT is Cloud Run's to set on the ingress container")
    for c in containers:
        for kind in ("startupProbe", "livenessProbe"):
            if c is not lc and kind in c and probe_port(c, c[kind]) is None:
                problem(f, f"container {c['name']}: a sidecar's {kind} needs an explicit port")

    annotation = template.get("metadata", {}).get("annotations", {}) \
        .get("run.googleapis.com/container-dependencies")
    try:
        deps = json.loads(annotation) if annotation else {}
        assert isinstance(deps, dict) and all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in deps.values())
    except (ValueError, AssertionError):
        problem(f, "container-dependencies is not a JSON object of name lists")
        deps = {}
    for name, needs in deps.items():
        for n in [name, *needs]:
            if n not in names:
                problem(f, f"container-dependencies names an unknown container {n}")
        for n in needs:
            if n == name or name in deps.get(n, []):
                problem(f, f"container-dependencies: {name} and {n} wait for each other")
            elif "startupProbe" not in (container(spec, n) or {}):
                problem(f, f"{name} waits for {n}, which has no startup probe to wait on")
    if "backend" not in deps.get("leafcache", []):
        problem(f, "leafcache should start after the backend (container-dependencies)")

    cfg_file = os.path.join(k8s, "cloudrun-proxy.toml")
    with open(cfg_file, "rb") as fh:
        cfg = tomllib.load(fh)
    where = f"{f} (with cloudrun-proxy.toml)"

    def from_secret(volume, name):
        return any(i.get("path") == name for i in volume.get("secret", {}).get("items", []))

    path = config_path(lc, where)
    if path:
        check_config_mount(where, lc, spec, path, from_secret)
    if addr(cfg.get("listen", "0.0.0.0:8080"))[1] != lc["ports"][0]["containerPort"]:
        problem(where, "listen's port is not the containerPort (PORT)")
    spool = check_common(where, cfg, lc, spec)
    if os.path.commonpath([spool, IMAGE_STATE_DIR]) != IMAGE_STATE_DIR:
        problem(where, f"spool_dir {spool} is not under the image's writable {IMAGE_STATE_DIR}")
    limit = quantity(lc["resources"]["limits"]["memory"])
    need = memory_budget(cfg, spec.get("containerConcurrency", 80)) \
        + size(cfg.get("events", {}).get("spool_max_bytes", "1GiB"))
    if need > limit:
        problem(where, f"process + in-memory spool need {need / MIB:.0f} MiB, "
                       f"above leafcache's memory limit {limit / MIB:.0f} MiB: "
                       "lower spool_max_bytes or raise the limit")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    k8s = sys.argv[1]
    check_kubernetes(k8s)
    check_cloud_run(k8s)
    for p in problems:
        print(f"deploy_check: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("deploy_check: Cloud Run service, cross-file consistency and budgets ok")


if __name__ == "__main__":
    main()
