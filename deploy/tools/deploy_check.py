#!/usr/bin/env python3
"""Offline checks of deploy/ that need the rendered manifests: called by deploy/validate.sh.

Subcommands:
  split RENDERED OUTDIR        one file per object: OUTDIR/builtin/NN.yaml for Kubernetes kinds,
                               OUTDIR/crd/SCHEMA/NN.yaml for kinds with a schema kept in
                               deploy/schemas; a kind with neither is an error
  stage RENDERED OUTDIR        lay out the gateway container's mounts as the pod sees them
                               (ConfigMaps with their data, Secrets with generated placeholders
                               for exactly the files the gateway config references there) and
                               print the config path to `gateway check`
  invariants DEPLOY_DIR RENDERED...   what a reviewer checks by hand (see INVARIANTS)

Every failure is printed as `deploy-check: <what>: <why>` and makes the exit code 1.
"""

import json
import os
import re
import secrets
import subprocess
import sys

import yaml

# Kinds that are not built into Kubernetes, and the schema kept for each in deploy/schemas.
CRD_SCHEMAS = {
    ("argoproj.io/v1alpha1", "ApplicationSet"): "applicationset-argoproj.io-v1alpha1.json",
    ("cilium.io/v2alpha1", "CiliumBGPPeeringPolicy"): "ciliumbgppeeringpolicy-cilium.io-v2alpha1.json",
    ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"): "ciliumloadbalancerippool-cilium.io-v2alpha1.json",
}

# API groups served by Kubernetes itself (kubernetes-validate has their schemas).
BUILTIN_GROUPS = {
    "", "apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
    "autoscaling", "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io",
    "discovery.k8s.io",
}

INVARIANTS = """
- the same anycast address in every bird config, the agent's --prefix (DaemonSet, systemd),
  the Cilium pool and the loopback address (systemd-networkd)
- distinct bird router ids
- the gateway config mounted as a directory from a ConfigMap (no subPath anywhere) and the
  --config argument inside that directory
- readinessProbe on /readyz, livenessProbe on /healthz, and a preStop drain on the gateway
- terminationGracePeriodSeconds >= the preStop drain wait + server.grace_period
- keys referenced, not inlined: no Secret objects with data in the manifests; admin token,
  sticky keys and API tokens live on Secret mounts
- RollingSync steps separate the regions: each region in exactly one step, one per step,
  and no automated sync in the template
- every metric in the alert rules and the dashboard exists in gateway/src/telemetry/metrics.rs
"""

failures = []


def fail(what, why):
    failures.append(f"deploy-check: {what}: {why}")


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def group_of(api_version):
    return api_version.split("/")[0] if "/" in api_version else ""


def split(rendered, outdir):
    docs = load_all(rendered)
    for i, doc in enumerate(docs):
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        name = f"{i:02d}-{key[1]}-{doc.get('metadata', {}).get('name', '')}.yaml"
        if key in CRD_SCHEMAS:
            target = os.path.join(outdir, "crd", CRD_SCHEMAS[key])
        elif group_of(key[0]) in BUILTIN_GROUPS:
            target = os.path.join(outdir, "builtin")
        else:
            fail(f"{rendered}: {key[1]} {key[0]}", "no built-in schema and none kept in deploy/schemas")
            continue
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, name), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)


def workloads(docs):
    return [d for d in docs if d.get("kind") in ("DaemonSet", "Deployment")]


def container(workload, name):
    for c in workload["spec"]["template"]["spec"].get("containers", []):
        if c["name"] == name:
            return c
    return None


def arg_after(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def seconds(text):
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", text):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def referenced_files(config):
    """(field, path) of every file a gateway config names."""
    out = []
    admin = config.get("admin") or {}
    if admin.get("token_file"):
        out.append(("admin.token_file", admin["token_file"]))
    for li, listener in enumerate(config.get("listeners") or []):
        for ci, cert in enumerate(((listener.get("tls") or {}).get("certs")) or []):
            out.append((f"listeners[{li}].tls.certs[{ci}].cert", cert["cert"]))
            out.append((f"listeners[{li}].tls.certs[{ci}].key", cert["key"]))
    for name, region in (config.get("regions") or {}).items():
        http = ((region.get("probe") or {}).get("http")) or {}
        checks = [(f"regions.{name}.probe.http", http)] + [
            (f"regions.{name}.checks[{i}]", c) for i, c in enumerate(region.get("checks") or [])
        ]
        for where, c in checks:
            for field in ("ca_file", "client_cert", "client_key", "bearer_token_file"):
                if c.get(field):
                    out.append((f"{where}.{field}", c[field]))
    for i, key in enumerate(config.get("sticky_keys") or []):
        out.append((f"sticky_keys[{i}].secret_file", key["secret_file"]))
    return out


def placeholder(path):
    """Writes a random placeholder for a Secret-held token or key file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")


def placeholder_pair(cert, key):
    """Writes a throwaway self-signed certificate and key for a Secret-held TLS pair."""
    for p in (cert, key):
        os.makedirs(os.path.dirname(p), exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=placeholder.example", "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stage(rendered, outdir):
    docs = load_all(rendered)
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    for w in workloads(docs):
        gw = container(w, "gateway")
        if gw is None:
            fail(f"{rendered}: {w['kind']} {w['metadata']['name']}", "no container named gateway")
            continue
        volumes = {v["name"]: v for v in w["spec"]["template"]["spec"].get("volumes", [])}
        mounts = []  # (mountPath, kind, source name)
        for m in gw.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if "configMap" in v:
                mounts.append((m["mountPath"], "configMap", v["configMap"]["name"]))
            elif "secret" in v:
                mounts.append((m["mountPath"], "secret", v["secret"]["secretName"]))
            else:
                mounts.append((m["mountPath"], "other", m["name"]))
        root = os.path.join(outdir, w["kind"].lower())
        for path, kind, source in mounts:
            target = root + path
            os.makedirs(target, exist_ok=True)
            if kind == "configMap":
                cm = configmaps.get(source)
                if cm is None:
                    # The generator appends a hash; match on the prefix it was generated from.
                    cm = next((c for n, c in configmaps.items() if n.rsplit("-", 1)[0] == source), None)
                if cm is None:
                    fail(f"{rendered}: volume {source}", "mounts a ConfigMap that the manifests do not define")
                    continue
                for key, value in (cm.get("data") or {}).items():
                    with open(os.path.join(target, key), "w") as f:
                        f.write(value)
        config_path = arg_after(gw.get("args", []), "--config")
        if not config_path:
            fail(f"{rendered}: gateway", "no --config argument")
            continue
        staged = root + config_path
        if not os.path.exists(staged):
            fail(f"{rendered}: --config {config_path}", "not provided by any ConfigMap mount")
            continue
        with open(staged) as f:
            config = yaml.safe_load(f)
        config_dir = os.path.dirname(config_path)
        for field, rel in referenced_files(config):
            pod_path = os.path.normpath(os.path.join(config_dir, rel))
            mount = next((m for m in mounts if pod_path.startswith(m[0].rstrip("/") + "/")), None)
            if mount is None:
                fail(f"{rendered}: {field} `{rel}`", f"{pod_path} is on no volume mount of the gateway container")
                continue
            if mount[1] == "secret":
                if field.endswith(".cert"):
                    key_rel = dict(referenced_files(config))[field[: -len(".cert")] + ".key"]
                    key_path = os.path.normpath(os.path.join(config_dir, key_rel))
                    placeholder_pair(root + pod_path, root + key_path)
                elif not (field.endswith(".key") and "tls.certs" in field):
                    placeholder(root + pod_path)
            elif not os.path.exists(root + pod_path):
                fail(f"{rendered}: {field} `{rel}`", f"{pod_path} is not in the mounted {mount[1]} {mount[2]}")
        print(staged)


def invariants(deploy_dir, rendered_files):
    repo = os.path.dirname(os.path.abspath(deploy_dir))
    vips, router_ids = {}, {}
    bird_dir = os.path.join(deploy_dir, "bird")
    for name in sorted(os.listdir(bird_dir)):
        if not name.endswith(".conf"):
            continue
        text = open(os.path.join(bird_dir, name)).read()
        m = re.search(r"define\s+ANYCAST\s*=\s*([0-9a-fA-F:./]+)\s*;", text)
        vips[f"bird/{name}"] = m.group(1) if m else None
        r = re.search(r"^\s*router id\s+([0-9.]+)\s*;", text, re.M)
        router_ids[f"bird/{name}"] = r.group(1) if r else None
    for name, rid in router_ids.items():
        if rid is None:
            fail(name, "no router id")
    seen = {}
    for name, rid in router_ids.items():
        if rid in seen:
            fail(name, f"router id {rid} is also {seen[rid]}'s")
        seen[rid] = name

    all_docs = []
    for rendered in rendered_files:
        docs = load_all(rendered)
        all_docs += [(rendered, d) for d in docs]
        for d in docs:
            if d.get("kind") == "Secret" and (d.get("data") or d.get("stringData")):
                fail(f"{rendered}: Secret {d['metadata']['name']}", "secret data inlined in the manifests: create it out of band and reference it")
            if d.get("kind") == "ConfigMap":
                for key in d.get("data") or {}:
                    if re.search(r"\.(key|token)$", key):
                        fail(f"{rendered}: ConfigMap {d['metadata']['name']}", f"`{key}` looks like a secret: keep it in a Secret")
            if d.get("kind") == "CiliumLoadBalancerIPPool":
                for b in d["spec"].get("blocks", []):
                    vips[f"{rendered}: CiliumLoadBalancerIPPool"] = b.get("cidr")
        configs = {}
        for d in docs:
            if d.get("kind") == "ConfigMap" and "gateway.yaml" in (d.get("data") or {}):
                configs = yaml.safe_load(d["data"]["gateway.yaml"])
        for w in workloads(docs):
            what = f"{rendered}: {w['kind']} {w['metadata']['name']}"
            spec = w["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for m in c.get("volumeMounts", []):
                    if "subPath" in m or "subPathExpr" in m:
                        fail(f"{what} container {c['name']}", f"volume {m['name']} mounted with subPath: it never sees updates; mount the directory")
                if c["name"] == "bgp-agent":
                    vips[f"{what} bgp-agent --prefix"] = arg_after(c.get("args", []), "--prefix")
            gw = container(w, "gateway")
            if gw is None:
                fail(what, "no gateway container")
                continue
            config_path = arg_after(gw.get("args", []), "--config") or ""
            config_dir = os.path.dirname(config_path)
            mount = next((m for m in gw.get("volumeMounts", []) if m["mountPath"].rstrip("/") == config_dir), None)
            if mount is None or "configMap" not in volumes.get(mount["name"], {}):
                fail(what, f"--config {config_path}: its directory is not a ConfigMap volume mount")
            ready = (gw.get("readinessProbe") or {}).get("httpGet", {}).get("path")
            live = (gw.get("livenessProbe") or {}).get("httpGet", {}).get("path")
            if ready != "/readyz":
                fail(what, f"readinessProbe path is {ready!r}, not /readyz")
            if live != "/healthz":
                fail(what, f"livenessProbe path is {live!r}, not /healthz")
            pre = (((gw.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
            if "drain" not in pre:
                fail(what, "no preStop `gateway drain` (readiness false, withdraw, wait for convergence)")
            wait = seconds(arg_after(pre, "--wait") or "10s") if "drain" in pre else 0
            grace = seconds(((configs.get("server") or {}).get("grace_period")) or "10s")
            tgps = spec.get("terminationGracePeriodSeconds", 30)
            if tgps < wait + grace:
                fail(what, f"terminationGracePeriodSeconds {tgps} < preStop wait {wait:g}s + server.grace_period {grace:g}s")
            sc = gw.get("securityContext") or {}
            pod_sc = spec.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                fail(what, "gateway not runAsNonRoot")
            if not sc.get("readOnlyRootFilesystem"):
                fail(what, "gateway root filesystem not read-only")
            caps = sc.get("capabilities") or {}
            if caps.get("drop") != ["ALL"] or set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                fail(what, f"capabilities {caps}: drop ALL, add at most NET_BIND_SERVICE")
            for c in spec.get("containers", []):
                if "resources" not in c:
                    fail(f"{what} container {c['name']}", "no resources")
        if workloads(docs) and not any(d.get("kind") == "PodDisruptionBudget" for d in docs):
            fail(rendered, "no PodDisruptionBudget")

    # systemd and the loopback address.
    sysd = os.path.join(deploy_dir, "systemd")
    agent_unit = open(os.path.join(sysd, "gateway-bgp-agent.service")).read()
    vips["systemd/gateway-bgp-agent.service --prefix"] = arg_after(agent_unit.split(), "--prefix")
    lo = re.search(r"^Address=(\S+)", open(os.path.join(sysd, "anycast-lo.network")).read(), re.M)
    vips["systemd/anycast-lo.network"] = lo.group(1) if lo else None
    unit = open(os.path.join(sysd, "gateway.service")).read()
    stop = re.search(r"^ExecStop=.*\bdrain\b.*--wait\s+(\S+)", unit, re.M)
    timeout = re.search(r"^TimeoutStopSec=(\d+)", unit, re.M)
    if not stop:
        fail("systemd/gateway.service", "no ExecStop drain")
    if not re.search(r"^ExecReload=.*-HUP", unit, re.M):
        fail("systemd/gateway.service", "no ExecReload with SIGHUP")
    base_config = yaml.safe_load(open(os.path.join(deploy_dir, "k8s/common/config/gateway.yaml")))
    grace = seconds(((base_config.get("server") or {}).get("grace_period")) or "10s")
    if stop and timeout and int(timeout.group(1)) < seconds(stop.group(1)) + grace:
        fail("systemd/gateway.service", f"TimeoutStopSec {timeout.group(1)} < drain wait + server.grace_period {grace:g}s")

    distinct = {v for v in vips.values()}
    if None in distinct or len(distinct) != 1:
        fail("anycast address", "not the same everywhere: " + ", ".join(f"{k}={v}" for k, v in sorted(vips.items())))

    # Argo CD: RollingSync separates the regions.
    appset_path = os.path.join(deploy_dir, "argocd/applicationset.yaml")
    appset = load_all(appset_path)[0]
    spec = appset["spec"]
    strategy = spec.get("strategy") or {}
    if strategy.get("type") != "RollingSync":
        fail(appset_path, "strategy is not RollingSync: a change would reach both regions at once")
    else:
        steps = strategy["rollingSync"]["steps"]
        regions_per_step = []
        for step in steps:
            values = set()
            for e in step["matchExpressions"]:
                if e["operator"] != "In":
                    fail(appset_path, f"step selector {e}: use `In` with explicit regions")
                values |= set(e.get("values") or [])
                if e["key"] not in (spec["template"]["metadata"].get("labels") or {}):
                    fail(appset_path, f"step key {e['key']} is not a label of the generated Applications")
            regions_per_step.append(values)
        overlays = sorted(os.listdir(os.path.join(deploy_dir, "k8s/overlays")))
        for region in overlays:
            n = sum(region in s for s in regions_per_step)
            if n != 1:
                fail(appset_path, f"region {region} is in {n} RollingSync steps, not exactly one")
        for s in regions_per_step:
            if len(s) > 1:
                fail(appset_path, f"a RollingSync step updates {sorted(s)} together")
    if (spec["template"]["spec"].get("syncPolicy") or {}).get("automated"):
        fail(appset_path, "automated sync in the template: RollingSync needs it off")

    # Metric names in the alert rules and the dashboard.
    telemetry = open(os.path.join(repo, "gateway/src/telemetry/metrics.rs")).read()
    known = set(re.findall(r'"(gateway_[a-z0-9_]+)"', telemetry))
    for rel in ("monitoring/alerts.yaml", "monitoring/grafana-dashboard.json"):
        text = open(os.path.join(deploy_dir, rel)).read()
        for name in sorted(set(re.findall(r"\bgateway_[a-z0-9_]+", text))):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if base not in known and name not in known:
                fail(rel, f"metric {name} does not exist in gateway/src/telemetry/metrics.rs")
    json.load(open(os.path.join(deploy_dir, "monitoring/grafana-dashboard.json")))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "split":
        split(sys.argv[2], sys.argv[3])
    elif cmd == "stage":
        stage(sys.argv[2], sys.argv[3])
    elif cmd == "invariants":
        invariants(sys.argv[2], sys.argv[3:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
