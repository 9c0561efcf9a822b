#!/usr/bin/env bash
# The README's test command: sets up what the tests need, then runs them.
#
#   scripts/test.sh          full tier: every test (containers, chaos, BIND, Prometheus, Helm)
#   scripts/test.sh quick    quick tier: unit tests, vectors, the storage suite and the
#                            single-process integration tests; no Docker, no Debian packages
#
# Full tier: as root on Debian/Ubuntu it installs the missing Debian packages itself
# (prometheus, prometheus-alertmanager, bind9, bind9-utils, bind9-dnsutils, debootstrap,
# python3, python3-pip); as another user it names what is missing with the command to
# install it and stops (exit 2).
# Docker Engine must be running (it cannot be installed from here). Extra arguments are
# passed to `cargo test` (e.g. `scripts/test.sh full --no-fail-fast`).
set -euo pipefail
cd "$(dirname "$0")/.."

tier=${1:-full}
[ $# -gt 0 ] && shift
case "$tier" in
quick | full) ;;
-h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "scripts/test.sh: unknown tier '$tier' (quick or full)" >&2
    exit 2
    ;;
esac

# The single-process integration tests of the quick tier: real kmsd processes on loopback,
# no containers and no external programs.
QUICK_TESTS=(vectors single_node access admin_auth admin_limits bad_input hostile reload membership)

if [ "$tier" = quick ]; then
    echo "== quick tier: unit tests, vectors, storage suite, single-process integration"
    # Every crate's own integration tests (services/*/tests) plus the listed end-to-end ones.
    # Always --workspace: selecting packages would change the feature set and rebuild deps.
    args=(--lib --bins)
    for f in services/*/tests/*.rs; do args+=(--test "$(basename "$f" .rs)"); done
    for t in "${QUICK_TESTS[@]}"; do args+=(--test "$t"); done
    cargo test --workspace "${args[@]}" "$@"
    exit 0
fi

# command -> Debian package that provides it
needs=(
    "promtool prometheus"
    "prometheus prometheus"
    "prometheus-alertmanager prometheus-alertmanager"
    "named bind9"
    "named-checkzone bind9-utils"
    "dig bind9-dnsutils"
    "nsupdate bind9-dnsutils"
    "debootstrap debootstrap"
    "objdump binutils"
    "python3 python3"
    "kill procps"
    "setpriv util-linux"
)
missing=()
for pair in "${needs[@]}"; do
    cmd=${pair%% *} pkg=${pair##* }
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
        [[ " ${missing[*]:-} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done
if ! python3 -m pip --version >/dev/null 2>&1; then
    [[ " ${missing[*]:-} " == *" python3-pip "* ]] || missing+=(python3-pip)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing ${missing[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        # The packages' own services (named on :53, prometheus on :9090, alertmanager on
        # :9093) must not start: the tests start their own on loopback ports. A policy-rc.d
        # of ours forbids service starts during the install and is removed afterwards.
        own_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            own_policy=1
        fi
        trap '[ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends ca-certificates "${missing[@]}" >/dev/null
        if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
        own_policy=
    else
        echo "scripts/test.sh: the full tier needs these Debian packages: ${missing[*]}" >&2
        echo "  install them with:  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        echo "  (or run the quick tier without them:  scripts/test.sh quick)" >&2
        exit 2
    fi
fi

if ! docker info >/dev/null 2>&1; then
    echo "scripts/test.sh: the full tier needs a running Docker Engine (docker info failed);" >&2
    echo "  start it, or run the quick tier:  scripts/test.sh quick" >&2
    exit 2
fi

echo "== full tier: cargo test --workspace"
cargo test --workspace "$@"
