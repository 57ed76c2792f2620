#!/usr/bin/env bash
# Validate the Kubernetes manifests in deploy/kubernetes (or DIR):
#
# - kustomization.yaml has only `resources:` (so `kubectl apply -k` applies
#   exactly those files, in that order: this script renders them the same
#   way, by reading them), every file it lists exists, and every manifest
#   in the directory is listed (examples/ excepted, validated on their own);
# - every object, in the kustomization and in examples/, against the
#   OpenAPI schemas of Kubernetes $K8S_VERSION (default 1.30.0) in strict
#   mode (an unknown field is an error), from the schemas the PyPI package
#   kubernetes-validate ships (no network); an object of a kind it has no
#   schema for is an error too (its CLI only warns); duplicate YAML keys
#   are errors (YAML loaders silently keep the last);
# - what the schemas cannot see, and the API server or kubelet would only
#   find on a live cluster, or never: selectors that match their pod
#   template, Services that select pods and name ports they have, a
#   StatefulSet's headless Service, probes on declared ports, volume
#   mounts of declared volumes, $(VAR) in args naming a declared env var,
#   ConfigMaps and keys that exist, Secrets that exist or that README.md
#   says how to create, one namespace for all;
# - Cairn's own: CAIRN_META lists every meta replica and CAIRN_META_STORE
#   and etcd's --initial-cluster every etcd replica, the --listen and
#   --metrics-listen ports are the containers' ports, every Cairn container
#   runs the same image, and examples/storage-zone.yaml runs the same
#   container as storage.yaml;
# - with a cairn binary ($CAIRN_BIN, else target/debug/cairn if built):
#   every --flag in a Cairn container's args and every CAIRN_* variable it
#   sets is one that `cairn <role> --help` lists.
#
# Needs python3 with kubernetes-validate (`pip install kubernetes-validate`;
# .ci/run installs it). Exits non-zero on any error.
set -euo pipefail
dir="${1:-}"
[ -z "$dir" ] || dir="$(cd "$dir" && pwd)"
cd "$(dirname "$0")/.."
dir="${dir:-deploy/kubernetes}"
if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "k8s-validate: needs the Python package kubernetes-validate (pip install kubernetes-validate)" >&2
    exit 1
fi
if [ -z "${CAIRN_BIN:-}" ] && [ -x target/debug/cairn ]; then
    CAIRN_BIN="$PWD/target/debug/cairn"
fi
if [ -n "${CAIRN_BIN:-}" ] && [ ! -x "$CAIRN_BIN" ]; then
    echo "k8s-validate: CAIRN_BIN=$CAIRN_BIN is not an executable" >&2
    exit 1
fi
export CAIRN_BIN="${CAIRN_BIN:-}"

exec python3 - "$dir" "${K8S_VERSION:-1.30.0}" <<'PY'
import os
import re
import subprocess
import sys

import kubernetes_validate
import yaml

root, version = sys.argv[1], sys.argv[2]
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


# --- loading ---------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path):
    """The objects in a YAML file, each as (path, object)."""
    try:
        with open(path) as f:
            docs = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        err(path, "cannot read YAML: " + " ".join(str(e).split()))
        return []
    out = []
    for i, d in enumerate(docs):
        name = d.get("metadata", {}).get("name") if isinstance(d, dict) else None
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") or not name:
            err(path, f"document {i + 1} is not an object with apiVersion, kind and metadata.name")
            continue
        out.append((path, d))
    return out


def manifests_under(top):
    found = []
    for base, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                found.append(os.path.normpath(os.path.join(base, f)))
    return found


# --- the kustomization -----------------------------------------------------

kpath = os.path.join(root, "kustomization.yaml")
examples_dir = os.path.normpath(os.path.join(root, "examples"))
main_objs = []
try:
    with open(kpath) as f:
        kust = yaml.load(f, Loader=StrictLoader)
except (OSError, yaml.YAMLError) as e:
    print(f"k8s-validate: {kpath}: {e}", file=sys.stderr)
    sys.exit(1)
if not isinstance(kust, dict):
    err(kpath, "not a mapping")
    kust = {}
if kust.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or kust.get("kind") != "Kustomization":
    err(kpath, "expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization")
extra = sorted(set(kust) - {"apiVersion", "kind", "resources"})
if extra:
    err(kpath, f"has {', '.join(extra)}: only resources: is rendered here (what kustomize "
               "would build from it is not checked); put transformations in an overlay")
listed = []
resources = kust.get("resources") or []
if not isinstance(resources, list) or not resources:
    err(kpath, "resources: must be a non-empty list of files")
    resources = []
for r in resources:
    if not isinstance(r, str) or "://" in r or os.path.isabs(r) or ".." in r.split("/"):
        err(kpath, f"resource {r!r} is not a file in {root}")
        continue
    p = os.path.normpath(os.path.join(root, r))
    if not os.path.isfile(p):
        err(kpath, f"resource {r} does not exist (or is not a file)")
        continue
    if p in listed:
        err(kpath, f"resource {r} is listed twice")
        continue
    listed.append(p)
for p in manifests_under(root):
    if p == os.path.normpath(kpath) or p.startswith(examples_dir + os.sep):
        continue
    if p not in listed:
        err(kpath, f"{os.path.relpath(p, root)} is not in resources: (kubectl apply -k would skip it)")

for p in listed:
    main_objs += load(p)
example_files = [p for p in manifests_under(examples_dir)] if os.path.isdir(examples_dir) else []
example_objs = [o for p in example_files for o in load(p)]

# --- schemas ---------------------------------------------------------------


def ident(o):
    group = o["apiVersion"].split("/")[0] if "/" in o["apiVersion"] else ""
    return (group, o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


def kn(o):
    return f"{o['kind']}/{o['metadata']['name']}"


checked = 0
for path, o in main_objs + example_objs:
    try:
        got = kubernetes_validate.validate(o, version, strict=True)
        if got != ".".join(version.lstrip("v").split(".")[:2]):
            # It falls back to the newest older schemas it has.
            err(f"{path} {kn(o)}", f"kubernetes-validate has no schemas for {version} (used {got})")
            continue
        checked += 1
        print(f"ok    {path}  {kn(o)}  (Kubernetes {got}, strict)")
        continue
    except kubernetes_validate.ValidationError as e:
        at = ".".join(str(x) for x in e.path) or "(top)"
        err(f"{path} {kn(o)}", f"{at}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        err(f"{path} {kn(o)}", e.message)
    except Exception as e:  # unsupported version, broken schema
        err(f"{path} {kn(o)}", f"cannot validate: {getattr(e, 'message', e)}")
if errors:
    # What follows reads fields the schemas guarantee: fix these first.
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    print(f"k8s-validate: {len(errors)} error(s) in {root} (the checks of references "
          "between objects run once every file loads and every object is valid)", file=sys.stderr)
    sys.exit(1)

# --- references the schemas cannot see ------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
try:
    readme = open(os.path.join(root, "README.md")).read()
except OSError:
    readme = ""


def subset(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def pod_labels(o):
    return o["spec"]["template"].get("metadata", {}).get("labels", {}) or {}


def containers(o):
    spec = o["spec"]["template"]["spec"]
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def check_set(objs, what, context=()):
    """Cross-object checks over one set (the kustomization, or an example
    with the kustomization's objects as `context` it may refer to)."""
    seen = {}
    for path, o in objs:
        i = ident(o)
        if i in seen:
            err(f"{path} {kn(o)}", f"also defined in {seen[i]}")
        seen[i] = path
    every = list(objs) + list(context)
    namespaces = [o["metadata"]["name"] for _, o in every if o["kind"] == "Namespace"]
    for path, o in objs:
        if o["kind"] in CLUSTER_SCOPED:
            continue
        ns = o["metadata"].get("namespace")
        if not namespaces:
            continue
        if ns not in namespaces:
            err(f"{path} {kn(o)}", f"metadata.namespace {ns!r}: expected {namespaces[0]!r} "
                                   f"(the Namespace in the {what})")
    configmaps = {o["metadata"]["name"]: o.get("data") or {} for _, o in every if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"] for _, o in every if o["kind"] == "Secret"}
    workloads = [(p, o) for p, o in every if o["kind"] in WORKLOADS]

    def secret_ref(where, name):
        if name not in secrets and name not in readme:
            err(where, f"Secret {name!r} is neither defined nor explained in {root}/README.md")

    def configmap_ref(where, name, key=None, optional=False):
        if optional:
            return
        if name not in configmaps:
            err(where, f"ConfigMap {name!r} is not defined")
        elif key is not None and key not in configmaps[name]:
            err(where, f"ConfigMap {name!r} has no key {key!r}")

    for path, o in objs:
        where = f"{path} {kn(o)}"
        k = o["kind"]
        if k in WORKLOADS:
            sel = o["spec"].get("selector", {}).get("matchLabels") or {}
            if not subset(sel, pod_labels(o)):
                err(where, "spec.selector.matchLabels do not match the pod template's labels")
            spec = o["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            if k == "StatefulSet":
                for t in o["spec"].get("volumeClaimTemplates") or []:
                    volumes[t["metadata"]["name"]] = {"pvc": True}
                svc = [x for _, x in every if x["kind"] == "Service"
                       and x["metadata"]["name"] == o["spec"].get("serviceName")]
                if not svc:
                    err(where, f"serviceName {o['spec'].get('serviceName')!r}: no such Service")
                elif svc[0]["spec"].get("clusterIP") != "None" or not subset(
                        svc[0]["spec"].get("selector") or {}, pod_labels(o)):
                    err(where, "its serviceName must be a headless Service selecting its pods")
            for v in volumes.values():
                if "secret" in v and not v["secret"].get("optional"):
                    secret_ref(where, v["secret"]["secretName"])
                if "configMap" in v:
                    cm = v["configMap"]
                    for item in cm.get("items") or [None]:
                        configmap_ref(where, cm["name"], item and item["key"], cm.get("optional", False))
            names = [c["name"] for c in containers(o)]
            if len(set(names)) != len(names):
                err(where, "two containers share a name")
            for c in containers(o):
                cw = f"{where} container {c['name']}"
                ports = c.get("ports") or []
                pnames = [p["name"] for p in ports if "name" in p]
                if len(set(pnames)) != len(pnames):
                    err(cw, "two ports share a name")
                numbers = {p["containerPort"] for p in ports}
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    pr = c.get(probe)
                    if not pr:
                        continue
                    for how in ("httpGet", "tcpSocket", "grpc"):
                        if how in pr:
                            port = pr[how].get("port")
                            if (isinstance(port, str) and port not in pnames) or (
                                    isinstance(port, int) and port not in numbers):
                                err(cw, f"{probe} port {port!r} is not one of the container's ports")
                for m in c.get("volumeMounts") or []:
                    if m["name"] not in volumes:
                        err(cw, f"volumeMount {m['name']!r} names no volume")
                env = c.get("env") or []
                env_names = [e["name"] for e in env]
                for e in env:
                    ref = e.get("valueFrom") or {}
                    if "secretKeyRef" in ref and not ref["secretKeyRef"].get("optional"):
                        secret_ref(cw, ref["secretKeyRef"]["name"])
                    if "configMapKeyRef" in ref:
                        r = ref["configMapKeyRef"]
                        configmap_ref(cw, r["name"], r["key"], r.get("optional", False))
                if not c.get("envFrom"):
                    for arg in (c.get("command") or []) + (c.get("args") or []):
                        for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                            if var not in env_names:
                                err(cw, f"{arg!r}: $({var}) is no env var of the container "
                                        "(Kubernetes would pass it literally)")
        if k == "Service":
            sel = o["spec"].get("selector") or {}
            matching = [x for _, x in workloads if subset(sel, pod_labels(x))]
            if not matching:
                err(where, "its selector matches no workload's pods")
            for p in o["spec"].get("ports") or []:
                tp = p.get("targetPort", p["port"])
                for x in matching:
                    cports = [cp for c in containers(x) for cp in c.get("ports") or []]
                    if (isinstance(tp, str) and tp not in [cp.get("name") for cp in cports]) or (
                            isinstance(tp, int) and tp not in [cp["containerPort"] for cp in cports]):
                        err(where, f"port {p.get('name', p['port'])}: targetPort {tp!r} "
                                   f"is no port of {kn(x)}")
        if k in ("PodDisruptionBudget", "NetworkPolicy"):
            sel = (o["spec"].get("selector") if k == "PodDisruptionBudget"
                   else o["spec"].get("podSelector")) or {}
            if not any(subset(sel.get("matchLabels") or {}, pod_labels(x)) for _, x in workloads):
                err(where, "its selector matches no workload's pods")


check_set(main_objs, "kustomization")
for p in example_files:
    check_set([x for x in example_objs if x[0] == p], f"example {p}", context=main_objs)

# --- Cairn's own consistency ----------------------------------------------


def component(objs, comp, kind):
    return [(p, o) for p, o in objs if o["kind"] == kind
            and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == comp]


def is_cairn(c):
    return (c.get("command") or [""])[0].endswith("/cairn")


def flag(c, name):
    for a in c.get("args") or []:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def port_of(addr):
    return int(addr.rsplit(":", 1)[1]) if addr and ":" in addr else None


cm = {o["metadata"]["name"]: o.get("data") or {} for _, o in main_objs if o["kind"] == "ConfigMap"}
config = cm.get("cairn-config", {})
metas = component(main_objs, "meta", "StatefulSet")
etcds = component(main_objs, "etcd", "StatefulSet")
if len(metas) != 1 or len(etcds) != 1 or not config:
    err(root, "expected one meta StatefulSet, one etcd StatefulSet and the ConfigMap cairn-config")
else:
    (mp, meta), (ep, etcd) = metas[0], etcds[0]
    mc = meta["spec"]["template"]["spec"]["containers"][0]
    mport = port_of(flag(mc, "--listen"))
    want = ",".join(f"{meta['metadata']['name']}-{i}.{meta['spec']['serviceName']}:{mport}"
                    for i in range(meta["spec"].get("replicas", 1)))
    if config.get("CAIRN_META") != want:
        err("ConfigMap/cairn-config", f"CAIRN_META is {config.get('CAIRN_META')!r}; the meta "
                                      f"StatefulSet's {meta['spec'].get('replicas', 1)} replicas are {want!r}")
    ec = etcd["spec"]["template"]["spec"]["containers"][0]
    eport = port_of(flag(ec, "--listen-client-urls"))
    n, ename, esvc = etcd["spec"].get("replicas", 1), etcd["metadata"]["name"], etcd["spec"]["serviceName"]
    hosts = ",".join(f"{ename}-{i}.{esvc}:{eport}" for i in range(n))
    store = config.get("CAIRN_META_STORE", "")
    if not re.fullmatch(re.escape(f"etcd://{hosts}") + r"(/[A-Za-z0-9_./-]*)?", store):
        err("ConfigMap/cairn-config", f"CAIRN_META_STORE is {store!r}; the etcd StatefulSet's "
                                      f"{n} members are etcd://{hosts}[/prefix]")
    peer = port_of(flag(ec, "--listen-peer-urls"))
    initial = ",".join(f"{ename}-{i}=http://{ename}-{i}.{esvc}:{peer}" for i in range(n))
    if flag(ec, "--initial-cluster") != initial:
        err(f"{ep} StatefulSet/{ename}", f"--initial-cluster must list its {n} members: {initial}")

images = set()
for path, o in main_objs + example_objs:
    if o["kind"] not in WORKLOADS:
        continue
    for c in containers(o):
        if not is_cairn(c):
            continue
        images.add(c.get("image"))
        cw = f"{path} {kn(o)} container {c['name']}"
        pnum = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        for fl, pname in (("--listen", None), ("--metrics-listen", "metrics")):
            port = port_of(flag(c, fl))
            if port is None:
                continue
            if port not in pnum.values():
                err(cw, f"{fl} port {port} is not a containerPort")
            if pname and pnum.get(pname) != port:
                err(cw, f"the port named {pname!r} is {pnum.get(pname)}, but {fl} binds {port}")
if len(images) > 1:
    err(root, f"Cairn containers run different images: {sorted(images)} (one release everywhere)")

base = component(main_objs, "storage", "DaemonSet")
for path, o in example_objs:
    if o["kind"] == "DaemonSet" and base:
        a = base[0][1]["spec"]["template"]["spec"]
        b = o["spec"]["template"]["spec"]

        def same(c):
            c = dict(c)
            c["env"] = [e for e in c.get("env") or [] if e["name"] not in ("CAIRN_ZONE", "CAIRN_GROUP")]
            return c

        if [same(c) for c in a["containers"]] != [same(c) for c in b["containers"]] or a.get(
                "volumes") != b.get("volumes"):
            err(f"{path} {kn(o)}", "its containers or volumes differ from storage.yaml's "
                                   "(beyond CAIRN_ZONE and CAIRN_GROUP)")

# --- flags against the binary ---------------------------------------------

cairn = os.environ.get("CAIRN_BIN")
if cairn:
    helps = {}
    for path, o in main_objs + example_objs:
        if o["kind"] not in WORKLOADS:
            continue
        for c in containers(o):
            if not is_cairn(c):
                continue
            args = c.get("args") or []
            sub = []
            for a in args:
                if a.startswith("-"):
                    break
                sub.append(a)
            key = tuple(sub)
            if key not in helps:
                r = subprocess.run([cairn, *sub, "--help"], capture_output=True, text=True,
                                   env={"PATH": os.environ.get("PATH", "")})
                helps[key] = r.stdout if r.returncode == 0 else None
                if r.returncode != 0:
                    err(f"{path} {kn(o)}", f"`cairn {' '.join(sub)} --help` failed: {r.stderr.strip()}")
            text = helps[key]
            if text is None:
                continue
            cw = f"{path} {kn(o)} container {c['name']}"
            for a in args[len(sub):]:
                if a.startswith("--"):
                    name = a.split("=", 1)[0]
                    if not re.search(re.escape(name) + r"(?![A-Za-z0-9-])", text):
                        err(cw, f"`cairn {' '.join(sub)}` has no flag {name}")
            used = {v for a in args for v in re.findall(r"\$\(([A-Za-z0-9_]+)\)", a)}
            for e in c.get("env") or []:
                if e["name"].startswith("CAIRN_") and e["name"] not in used:
                    if not re.search(re.escape(e["name"]) + r"(?![A-Za-z0-9_])", text):
                        err(cw, f"`cairn {' '.join(sub)} --help` names no variable {e['name']}")
    print(f"flags and CAIRN_* variables checked against {cairn} "
          f"({', '.join(' '.join(k) for k in sorted(helps))})")
else:
    print("flags not checked against a cairn binary (set CAIRN_BIN, or build target/debug/cairn)")

if errors:
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    print(f"k8s-validate: {len(errors)} error(s) in {root}", file=sys.stderr)
    sys.exit(1)
print(f"k8s-validate: {checked} objects in {len(listed)} kustomization files and "
      f"{len(example_files)} examples valid against Kubernetes {version} (strict), references consistent")
PY
