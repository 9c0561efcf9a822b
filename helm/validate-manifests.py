#!/usr/bin/env python3
"""Validates manifests rendered by `helm template` from the kms-cluster chart.

Called by helm/validate.sh (which provides kubernetes-validate on PYTHONPATH), once per
Kubernetes version:

    validate-manifests.py --kube-version 1.33.0 --repo REPO CASE=RENDERED.yaml ...

For every document:
  * Kubernetes kinds: kubernetes-validate, strict (unknown fields are errors). A kind
    without a bundled schema is an error, except the Prometheus Operator CRDs below.
  * ServiceMonitor / PrometheusRule (monitoring.coreos.com/v1, not in kubernetes-validate):
    a small JSON schema of the fields this chart renders (additionalProperties false).
  * kmsd specifics: kmsd.toml keys, flags and KMSD_* variables must be documented in the
    top-level README's configuration reference (kmsd rejects unknown file keys), except
    the listed features of a newer kmsd, which are reported; probes must be httpGet.
Cases named default, production, discovery, features get extra assertions.
Exit status 0 when everything passed, 1 otherwise.
"""

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv

# New kmsd interfaces the chart uses that the README's configuration reference does not
# list yet (reported, not errors; each drops out once the README documents it).
PENDING_FLAGS = {
    "--node-id-from-hostname": "node id = StatefulSet ordinal + 1 from the hostname",
}
PENDING_ENV = {
    "KMSD_NODE_ID_FROM_HOSTNAME": "env form of --node-id-from-hostname",
    "KMSD_DISCOVERY": "Kubernetes peer discovery (discovery.kubernetes.enabled)",
}
# Variables the chart sets for Kubernetes' $(VAR) expansion in args, not read by kmsd.
CHART_ENV = {"POD_NAME", "POD_NAMESPACE"}
# Keys the chart itself owns in kmsd.toml.
CHART_TOML_KEYS = {"listen", "admin_listen", "cluster_listen", "data_dir", "catalog_file", "tls_ca", "tls_cert", "tls_key"}
# With tls.enabled: kmsd reads the projected Secret for mutual TLS on 9689.
TLS_TOML = {"tls_ca": "/etc/kmsd/tls/ca.crt", "tls_cert": "/etc/kmsd/tls/tls.crt", "tls_key": "/etc/kmsd/tls/tls.key"}
# Keys that must never be in kmsd.toml (per pod: flags).
PER_POD_KEYS = {"node_id", "peers", "cluster_advertise"}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": DNS1123_SUBDOMAIN.pattern, "maxLength": 253},
        "namespace": {"type": "string", "pattern": DNS1123_LABEL.pattern, "maxLength": 63},
        "labels": STRMAP,
        "annotations": STRMAP,
    },
}
SECRET_KEY_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}, "optional": {"type": "boolean"}},
}
SERVICE_MONITOR = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": STRMAP, "matchExpressions": {"type": "array"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "tlsConfig": {"type": "object"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": SECRET_KEY_SELECTOR,
                                },
                            },
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "limit": {"type": "integer"},
                            "labels": STRMAP,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "record": {"type": "string", "minLength": 1},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": DURATION,
                                        "keep_firing_for": DURATION,
                                        "labels": STRMAP,
                                        "annotations": STRMAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}


class Checker:
    def __init__(self, kube_version, readme):
        self.kube_version = kube_version
        self.errors = []
        self.crd_validated = []
        self.pending_used = {}
        self.keys, self.flags, self.env = readme_reference(readme)

    def fail(self, case, msg):
        self.errors.append(f"{case}: {msg}")

    def check(self, case, cond, msg):
        if not cond:
            self.fail(case, msg)
        return cond

    # -- per document -------------------------------------------------------------

    def validate_doc(self, case, doc):
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = (doc.get("metadata") or {}).get("name", "?")
        ref = f"{kind}/{name}"
        if (api, kind) in CRD_SCHEMAS:
            try:
                jsonschema.Draft7Validator(CRD_SCHEMAS[(api, kind)]).validate(doc)
                self.crd_validated.append(f"{case}: {ref} ({api}, chart's own schema)")
            except jsonschema.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path)
                self.fail(case, f"{ref} does not match the {kind} schema at {path}: {e.message}")
            return
        try:
            kv.validate(doc, self.kube_version, strict=True)
        except kv.SchemaNotFoundError as e:
            self.fail(case, f"{ref}: {e.message} (not a known Kubernetes kind)")
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            self.fail(case, f"{ref} is invalid for Kubernetes {e.version} at {path}: {e.message}")
        meta = doc.get("metadata") or {}
        limit = 63 if kind in ("Service", "StatefulSet") else 253
        pattern = DNS1123_LABEL if kind in ("Service", "StatefulSet") else DNS1123_SUBDOMAIN
        self.check(case, len(name) <= limit and pattern.match(name), f"{ref}: invalid name")
        for k, v in (meta.get("labels") or {}).items():
            self.check(case, isinstance(v, str) and len(v) <= 63 and re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", v),
                       f"{ref}: invalid label value {k}={v!r}")

    def check_pod(self, case, ref, pod):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if self.check(case, p is not None, f"{ref}: container {c['name']} has no {probe}"):
                    self.check(case, "exec" not in p and "httpGet" in p,
                               f"{ref}: {probe} must be httpGet (the image has no shell)")
            for arg in c.get("args", []) + c.get("command", [])[1:]:
                m = re.match(r"^(--[a-z0-9-]+)", arg)
                if not m:
                    continue
                flag = m.group(1)
                if flag in PENDING_FLAGS and flag not in self.flags:
                    self.pending_used.setdefault(flag, set()).add(case)
                else:
                    self.check(case, flag in self.flags, f"{ref}: flag {flag} is not in the README's configuration reference")
            for e in c.get("env", []):
                n = e["name"]
                if n in CHART_ENV or not n.startswith("KMSD_"):
                    continue
                if n in PENDING_ENV and n not in self.env:
                    self.pending_used.setdefault(n, set()).add(case)
                else:
                    self.check(case, n in self.env, f"{ref}: env {n} is not in the README's configuration reference")
            sc = c.get("securityContext", {})
            self.check(case, sc.get("readOnlyRootFilesystem") is True, f"{ref}: root filesystem not read-only")
            self.check(case, sc.get("allowPrivilegeEscalation") is False, f"{ref}: privilege escalation allowed")
            self.check(case, "ALL" in sc.get("capabilities", {}).get("drop", []), f"{ref}: capabilities not dropped")

    def check_kmsd_toml(self, case, ref, text):
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.fail(case, f"{ref}: kmsd.toml is not valid TOML: {e}")
            return None
        for key in cfg:
            self.check(case, key in self.keys, f"{ref}: kmsd.toml key {key!r} is not in the README's configuration reference (kmsd rejects unknown keys)")
            self.check(case, key not in PER_POD_KEYS, f"{ref}: kmsd.toml must not set per-pod key {key!r}")
        for key in CHART_TOML_KEYS - {"catalog_file"} - set(TLS_TOML):
            self.check(case, key in cfg, f"{ref}: kmsd.toml lacks {key}")
        for key, value in cfg.items():
            self.check(case, not isinstance(value, float), f"{ref}: kmsd.toml {key} = {value} is a float (kmsd wants an integer)")
        return cfg

    # -- per case ------------------------------------------------------------------

    def run_case(self, case, path, repo):
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        if not self.check(case, docs, "rendered nothing"):
            return
        seen = set()
        for d in docs:
            key = (d.get("kind"), (d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name"))
            self.check(case, key not in seen, f"duplicate {key}")
            seen.add(key)
            self.validate_doc(case, d)
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        sts = by_kind.get("StatefulSet", [])
        if not self.check(case, len(sts) == 1, f"expected one StatefulSet, got {len(sts)}"):
            return
        sts = sts[0]
        pod = sts["spec"]["template"]["spec"]
        self.check_pod(case, f"StatefulSet/{sts['metadata']['name']}", pod)
        cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
        cfg = None
        for c in cms.values():
            if "kmsd.toml" in c.get("data", {}):
                cfg = self.check_kmsd_toml(case, f"ConfigMap/{c['metadata']['name']}", c["data"]["kmsd.toml"])
        if self.check(case, cfg is not None, "no ConfigMap with kmsd.toml"):
            # Environment variables override the file (and the image sets these in its ENV).
            env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
            for var, key in (("KMSD_LISTEN", "listen"), ("KMSD_ADMIN_LISTEN", "admin_listen"),
                             ("KMSD_CLUSTER_LISTEN", "cluster_listen"), ("KMSD_DATA_DIR", "data_dir")):
                want = ",".join(cfg[key]) if isinstance(cfg.get(key), list) else cfg.get(key)
                self.check(case, env.get(var) == want, f"env {var}={env.get(var)!r} differs from kmsd.toml {key}={cfg.get(key)!r}")
        self.common_invariants(case, docs, by_kind, sts, pod)
        extra = getattr(self, "case_" + case.replace("-", "_"), None)
        if extra:
            extra(case, docs, by_kind, sts, pod, cfg, repo)

    def common_invariants(self, case, docs, by_kind, sts, pod):
        spec = sts["spec"]
        sel = spec["selector"]["matchLabels"]
        self.check(case, spec.get("podManagementPolicy") == "Parallel", "podManagementPolicy is not Parallel")
        headless = [s for s in by_kind.get("Service", []) if s["spec"].get("clusterIP") == "None"]
        if self.check(case, len(headless) == 1, "expected one headless Service"):
            h = headless[0]
            self.check(case, h["spec"].get("publishNotReadyAddresses") is True, "headless Service lacks publishNotReadyAddresses: true")
            self.check(case, h["metadata"]["name"] == spec["serviceName"], "StatefulSet serviceName is not the headless Service")
            self.check(case, h["spec"]["selector"] == sel, "headless Service selector differs from the pods'")
            ports = {p["name"]: p["port"] for p in h["spec"]["ports"]}
            self.check(case, ports == {"kms": 1688, "admin": 9688, "cluster": 9689}, f"headless ports {ports}")
        c = pod["containers"][0]
        args = c["args"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.check(case, ports == {"kms": 1688, "admin": 9688, "cluster": 9689}, f"container ports {ports}")
        self.check(case, "--config=/etc/kmsd/kmsd.toml" in args, "kmsd not started with --config=/etc/kmsd/kmsd.toml")
        self.check(case, "--node-id-from-hostname" in args, "--node-id-from-hostname missing")
        adv = [a for a in args if a.startswith("--cluster-advertise=")]
        ns = sts["metadata"]["namespace"]
        if self.check(case, len(adv) == 1, "--cluster-advertise missing"):
            self.check(case, adv[0] == f"--cluster-advertise=$(POD_NAME).{spec['serviceName']}.{ns}.svc.cluster.local:9689", f"unexpected {adv[0]}")
        env = {e["name"] for e in c.get("env", [])}
        self.check(case, {"POD_NAME", "POD_NAMESPACE"} <= env, "POD_NAME/POD_NAMESPACE not from the downward API")
        psc = pod.get("securityContext", {})
        self.check(case, psc.get("runAsNonRoot") is True and psc.get("fsGroup") == 10001 and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                   "pod securityContext: runAsNonRoot, fsGroup 10001, seccomp RuntimeDefault expected")
        self.check(case, pod.get("terminationGracePeriodSeconds") == 30, "terminationGracePeriodSeconds is not 30")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.check(case, mounts.get("/var/lib/kmsd") == "data" and mounts.get("/etc/kmsd") == "config", f"volume mounts {mounts}")
        # Every Service selects pods of this release.
        for s in by_kind.get("Service", []):
            ssel = s["spec"].get("selector", {})
            self.check(case, all(ssel.get(k) == v for k, v in sel.items()), f"Service/{s['metadata']['name']} does not select this release's pods")
        for p in by_kind.get("PodDisruptionBudget", []):
            self.check(case, p["spec"]["selector"]["matchLabels"] == sel, "PDB selector differs from the pods'")

    def peers_of(self, args):
        peers = [a for a in args if a.startswith("--peers=")]
        if not peers:
            return None
        return dict(p.split("=", 1) for p in peers[0][len("--peers="):].split(","))

    def case_default(self, case, docs, by_kind, sts, pod, cfg, repo):
        spec = sts["spec"]
        self.check(case, spec["replicas"] == 3, f"StatefulSet replicas {spec['replicas']} != 3")
        pdbs = by_kind.get("PodDisruptionBudget", [])
        if self.check(case, len(pdbs) == 1, "no PodDisruptionBudget"):
            self.check(case, pdbs[0]["spec"].get("maxUnavailable") == 1, "PDB maxUnavailable is not 1")
        peers = self.peers_of(pod["containers"][0]["args"])
        name, svc, ns = sts["metadata"]["name"], spec["serviceName"], sts["metadata"]["namespace"]
        want = {str(i + 1): f"{name}-{i}.{svc}.{ns}.svc.cluster.local:9689" for i in range(3)}
        self.check(case, peers == want, f"--peers {peers} != {want}")
        self.check(case, [v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])] == ["data"], "no data volumeClaimTemplate")
        aff = pod.get("affinity", {}).get("podAntiAffinity", {})
        self.check(case, "preferredDuringSchedulingIgnoredDuringExecution" in aff, "default anti-affinity is not preferred")
        self.check(case, pod.get("automountServiceAccountToken") is False, "ServiceAccount token mounted without discovery")
        for kind in ("Role", "RoleBinding", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "Secret"):
            self.check(case, kind not in by_kind, f"default render contains a {kind}")
        self.check(case, cfg and cfg.get("log_format") == "json" and cfg.get("listen") == ["0.0.0.0:1688"]
                   and cfg.get("admin_listen") == "0.0.0.0:9688" and cfg.get("cluster_listen") == "0.0.0.0:9689"
                   and cfg.get("data_dir") == "/var/lib/kmsd", f"default kmsd.toml {cfg}")
        self.check(case, cfg is not None and not any(k in cfg for k in TLS_TOML), "tls.enabled is off, yet kmsd.toml sets tls_*")
        kms = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") != "None"]
        self.check(case, len(kms) == 1 and kms[0]["spec"]["type"] == "ClusterIP" and kms[0]["spec"]["ports"][0]["port"] == 1688,
                   "default KMS Service is not ClusterIP on 1688")

    def case_production(self, case, docs, by_kind, sts, pod, cfg, repo):
        spec = sts["spec"]
        self.check(case, spec["replicas"] == 5, "production replicas != 5")
        # Production uses Kubernetes discovery: no static peer list, the discovery checks apply.
        self.case_discovery(case, docs, by_kind, sts, pod, cfg, repo)
        name = sts["metadata"]["name"]
        per_node = sorted((s for s in by_kind["Service"] if s["spec"].get("selector", {}).get("statefulset.kubernetes.io/pod-name")),
                          key=lambda s: s["metadata"]["name"])
        self.check(case, [s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] for s in per_node] == [f"{name}-{i}" for i in range(5)],
                   "one per-node Service per pod expected")
        for i, s in enumerate(per_node):
            self.check(case, s["spec"]["type"] == "LoadBalancer" and s["spec"].get("externalTrafficPolicy") == "Local"
                       and s["spec"].get("loadBalancerIP") == f"10.20.0.{11 + i}"
                       and s["metadata"]["annotations"].get("external-dns.alpha.kubernetes.io/hostname") == f"kms{i + 1}.campus.example"
                       and s["metadata"]["annotations"].get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal",
                       f"per-node Service {s['metadata']['name']} settings")
        self.check(case, "requiredDuringSchedulingIgnoredDuringExecution" in pod.get("affinity", {}).get("podAntiAffinity", {}), "hard anti-affinity missing")
        tsc = pod.get("topologySpreadConstraints", [])
        self.check(case, len(tsc) == 1 and tsc[0].get("labelSelector", {}).get("matchLabels") == spec["selector"]["matchLabels"],
                   "topology spread constraint without the release selector")
        nps = by_kind.get("NetworkPolicy", [])
        if self.check(case, len(nps) == 1, "no NetworkPolicy"):
            rules = {r["ports"][0]["port"]: r.get("from") for r in nps[0]["spec"]["ingress"]}
            self.check(case, rules.get("kms") == [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.99.0/24"]}}],
                       f"1688 sources {rules.get('kms')}")
            self.check(case, rules.get("cluster") == [{"podSelector": {"matchLabels": spec["selector"]["matchLabels"]}}], "9689 not limited to the release's pods")
            adm = rules.get("admin") or [{}]
            self.check(case, "namespaceSelector" in adm[0] and "podSelector" in adm[0], f"9688 sources {adm}")
        sm = by_kind.get("ServiceMonitor", [])
        if self.check(case, len(sm) == 1, "no ServiceMonitor"):
            ep = sm[0]["spec"]["endpoints"][0]
            self.check(case, ep["port"] == "admin" and ep["path"] == "/metrics", "ServiceMonitor does not scrape admin /metrics")
            self.check(case, ep.get("authorization", {}).get("credentials") == {"name": "kms-admin-token", "key": "token"}, "ServiceMonitor does not send the admin token")
            headless = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"][0]
            self.check(case, headless["metadata"]["labels"].get(sm[0]["spec"]["jobLabel"]) == "kms", "job label of the scraped Service is not kms")
            self.check(case, all(headless["metadata"]["labels"].get(k) == v for k, v in sm[0]["spec"]["selector"]["matchLabels"].items()), "ServiceMonitor does not select the headless Service")
            selected = [s for s in by_kind["Service"] if all(s["metadata"]["labels"].get(k) == v for k, v in sm[0]["spec"]["selector"]["matchLabels"].items())]
            self.check(case, len(selected) == 1, "ServiceMonitor selects more than the headless Service")
        pr = by_kind.get("PrometheusRule", [])
        if self.check(case, len(pr) == 1, "no PrometheusRule"):
            source = yaml.safe_load((repo / "prometheus" / "kms-rules.yml").read_text())
            self.check(case, pr[0]["spec"]["groups"] == source["groups"], "PrometheusRule groups differ from prometheus/kms-rules.yml")
        dash = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", []) if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"}
        files = sorted((repo / "grafana" / "dashboards").glob("*.json"))
        self.check(case, len(dash) == len(files) and files, f"{len(dash)} dashboard ConfigMaps for {len(files)} dashboards")
        for f in files:
            got = [c for c in dash.values() if f.name in c.get("data", {})]
            if self.check(case, len(got) == 1, f"no dashboard ConfigMap for {f.name}"):
                self.check(case, json.loads(got[0]["data"][f.name]) == json.loads(f.read_text()), f"dashboard {f.name} differs from grafana/dashboards")
                self.check(case, got[0]["metadata"].get("annotations", {}).get("grafana_folder") == "KMS", "dashboard folder annotation")
        c = pod["containers"][0]
        token = [e for e in c.get("env", []) if e["name"] == "KMSD_ADMIN_TOKEN"]
        self.check(case, token and token[0]["valueFrom"]["secretKeyRef"] == {"name": "kms-admin-token", "key": "token"}, "KMSD_ADMIN_TOKEN not from kms-admin-token/token")
        vols = {v["name"]: v for v in pod["volumes"]}
        srcs = vols["config"]["projected"]["sources"]
        self.check(case, any(s.get("secret", {}).get("name") == "kms-cluster-tls"
                             and sorted(i["path"] for i in s["secret"]["items"]) == ["tls/ca.crt", "tls/tls.crt", "tls/tls.key"] for s in srcs),
                   "TLS secret kms-cluster-tls not projected at /etc/kmsd/tls")
        self.check(case, cfg and all(cfg.get(k) == v for k, v in TLS_TOML.items()), f"tls.enabled but kmsd.toml lacks {TLS_TOML}")
        self.check(case, "Secret" not in by_kind, "existingSecret given, yet the chart renders a Secret")

    def case_discovery(self, case, docs, by_kind, sts, pod, cfg, repo):
        c = pod["containers"][0]
        self.check(case, self.peers_of(c["args"]) is None, "--peers rendered although discovery is enabled")
        self.check(case, {"name": "KMSD_DISCOVERY", "value": "kubernetes"} in c.get("env", []), "KMSD_DISCOVERY=kubernetes missing")
        self.check(case, pod.get("automountServiceAccountToken") is True, "ServiceAccount token not mounted for discovery")
        roles = by_kind.get("Role", [])
        if self.check(case, len(roles) == 1 and len(by_kind.get("RoleBinding", [])) == 1, "Role/RoleBinding missing"):
            got = {(g, r): sorted(rule["verbs"]) for rule in roles[0]["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
            self.check(case, got == {("discovery.k8s.io", "endpointslices"): ["get", "list", "watch"], ("apps", "statefulsets"): ["get"]}, f"Role rules {got}")
            rb = by_kind["RoleBinding"][0]
            self.check(case, rb["subjects"][0]["name"] == pod["serviceAccountName"] and rb["roleRef"]["name"] == roles[0]["metadata"]["name"], "RoleBinding does not bind the pods' ServiceAccount")

    def case_features(self, case, docs, by_kind, sts, pod, cfg, repo):
        secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
        tls = [s for s in secrets.values() if s["type"] == "kubernetes.io/tls"]
        self.check(case, len(tls) == 1 and sorted(tls[0]["data"]) == ["ca.crt", "tls.crt", "tls.key"], "generated TLS Secret")
        self.check(case, any(s["type"] == "Opaque" and "token" in s["data"] for s in secrets.values()), "generated admin token Secret")
        self.check(case, cfg and cfg.get("catalog_file") == "/etc/kmsd/catalog.toml", "catalog_file not set")
        self.check(case, cfg and all(cfg.get(k) == v for k, v in TLS_TOML.items()), f"tls.enabled but kmsd.toml lacks {TLS_TOML}")
        cm = [c for c in by_kind["ConfigMap"] if "catalog.toml" in c.get("data", {})]
        if self.check(case, len(cm) == 1, "catalog.toml missing"):
            tomllib.loads(cm[0]["data"]["catalog.toml"])
        self.check(case, cfg and cfg.get("listen") == ["[::]:1688"] and "quorum_loss" not in cfg and cfg.get("worker_threads") == 0,
                   f"bindAddress/null/0 handling in kmsd.toml {cfg}")
        self.check(case, not sts["spec"].get("volumeClaimTemplates") and
                   any(v["name"] == "data" and "emptyDir" in v for v in pod["volumes"]), "persistence disabled: data should be an emptyDir")
        np = by_kind.get("NetworkPolicy", [{}])[0]
        self.check(case, "Egress" in np.get("spec", {}).get("policyTypes", []), "egress policy missing")
        kms = [s for s in by_kind["Service"] if s["metadata"]["labels"].get("kms-cluster/service") == "kms"][0]
        self.check(case, kms["spec"]["type"] == "NodePort" and kms["spec"]["ports"][0].get("nodePort") == 31688 and kms["spec"].get("externalTrafficPolicy") == "Local",
                   "NodePort Service settings")
        pdb = by_kind["PodDisruptionBudget"][0]["spec"]
        self.check(case, pdb.get("minAvailable") == "51%" and "maxUnavailable" not in pdb, f"PDB {pdb}")
        dash = [c for c in by_kind.get("ConfigMap", []) if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        self.check(case, dash and all("kms-prometheus" not in v and '"uid": "prom-main"' in v for c in dash for v in c["data"].values()),
                   "datasourceUid not rewritten in the dashboards")


def self_test(kube_version, repo, default_render):
    """Breaks a good default render in known ways; each must be reported."""
    import copy
    import tempfile

    good = [d for d in yaml.safe_load_all(Path(default_render).read_text()) if d]

    def first(docs, kind, pred=lambda d: True):
        return next(d for d in docs if d["kind"] == kind and pred(d))

    def headless(docs):
        return first(docs, "Service", lambda d: d["spec"].get("clusterIP") == "None")

    def container(docs):
        return first(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]

    def toml(docs, extra):
        cm = first(docs, "ConfigMap", lambda d: "kmsd.toml" in d["data"])
        cm["data"]["kmsd.toml"] += extra

    def toml_sub(docs, old, new):
        cm = first(docs, "ConfigMap", lambda d: "kmsd.toml" in d["data"])
        assert old in cm["data"]["kmsd.toml"], old
        cm["data"]["kmsd.toml"] = cm["data"]["kmsd.toml"].replace(old, new)

    mutations = {
        "headless Service without publishNotReadyAddresses": lambda d: headless(d)["spec"].pop("publishNotReadyAddresses"),
        "replicas 2": lambda d: first(d, "StatefulSet")["spec"].update(replicas=2),
        "unknown field in a Service (strict schema)": lambda d: headless(d)["spec"].update(sessionAffinityy="None"),
        "string containerPort (schema type)": lambda d: container(d)["ports"][0].update(containerPort="1688"),
        "unknown kmsd.toml key": lambda d: toml(d, "renewal_intervall = 60\n"),
        "per-pod key in kmsd.toml": lambda d: toml(d, "node_id = 2\n"),
        "float in kmsd.toml": lambda d: toml_sub(d, "lcid = 1033\n", "lcid = 1033.0\n"),
        "exec readiness probe": lambda d: container(d).update(readinessProbe={"exec": {"command": ["true"]}}),
        "undocumented flag": lambda d: container(d)["args"].append("--peer-list=x"),
        "KMSD_LISTEN differing from kmsd.toml": lambda d: next(e for e in container(d)["env"] if e["name"] == "KMSD_LISTEN").update(value="[::]:1688"),
        "undocumented KMSD_ variable": lambda d: container(d)["env"].append({"name": "KMSD_BOGUS", "value": "1"}),
        "no PodDisruptionBudget": lambda d: d.remove(first(d, "PodDisruptionBudget")),
        "unknown kind": lambda d: d.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "kms"}}),
        "PrometheusRule rule without expr": lambda d: d.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                                                             "metadata": {"name": "r", "namespace": "kms"},
                                                             "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}}),
        "ServiceMonitor with a misspelled field": lambda d: d.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                                                                   "metadata": {"name": "m", "namespace": "kms"},
                                                                   "spec": {"selector": {}, "endpoints": [{"port": "admin", "intervall": "30s"}]}}),
    }
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, mutate in mutations.items():
            docs = copy.deepcopy(good)
            mutate(docs)
            path = Path(tmp) / "broken.yaml"
            path.write_text(yaml.safe_dump_all(docs))
            checker = Checker(kube_version, repo / "README.md")
            try:
                checker.run_case("default", path, repo)
            except Exception as e:
                checker.fail("default", f"crashed: {e}")
            if not checker.errors:
                missed.append(what)
    print(f"  k8s {kube_version} self-test: {len(mutations) - len(missed)}/{len(mutations)} deliberately broken renders reported")
    for what in missed:
        print(f"ERROR self-test: a render with '{what}' passed validation", file=sys.stderr)
    return not missed


def readme_reference(readme):
    """File keys, flags and KMSD_* variables of the README's configuration reference."""
    text = Path(readme).read_text()
    start = text.index("## Configuration reference")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    keys, flags, env = set(), {"--config"}, {"KMSD_CONFIG"}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cols = [c.strip() for c in line.strip("|").split("|")]
        m = re.match(r"^`([a-z0-9_]+)`$", cols[0])
        if m:
            keys.add(m.group(1))
        flags |= set(re.findall(r"--[a-z0-9-]+", cols[1]))
        env |= set(re.findall(r"KMSD_[A-Z0-9_]+", cols[2]))
    if len(keys) < 20:
        raise SystemExit(f"could not read the configuration reference of {readme} ({len(keys)} keys)")
    return keys, flags, env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kube-version", required=True)
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--self-test", metavar="DEFAULT_RENDER", help="also check that broken copies of this render fail")
    ap.add_argument("cases", nargs="+", help="NAME=FILE")
    a = ap.parse_args()
    checker = Checker(a.kube_version, a.repo / "README.md")
    for item in a.cases:
        case, path = item.split("=", 1)
        before = len(checker.errors)
        try:
            checker.run_case(case, path, a.repo)
        except Exception as e:  # a shape the checks did not expect is a failure too
            checker.fail(case, f"check crashed: {type(e).__name__}: {e}")
        n = len([d for d in yaml.safe_load_all(Path(path).read_text()) if d])
        status = "ok" if len(checker.errors) == before else "FAILED"
        print(f"  k8s {a.kube_version} {case}: {n} documents {status}")
    for line in checker.crd_validated:
        print(f"  k8s {a.kube_version} not in kubernetes-validate, checked against the chart's CRD schema: {line}")
    for name, cases in sorted(checker.pending_used.items()):
        what = PENDING_FLAGS.get(name) or PENDING_ENV.get(name)
        print(f"  k8s {a.kube_version} not in the README's configuration reference yet: {name} ({what}) in {', '.join(sorted(cases))}")
    for e in checker.errors:
        print(f"ERROR {e}", file=sys.stderr)
    ok = not checker.errors
    if a.self_test:
        ok = self_test(a.kube_version, a.repo, a.self_test) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
