#!/usr/bin/env bash
# Builds the container image the fault tests run (`kms-cluster-test:latest`):
#
#   FROM scratch, with only `kmsd` (the test suite's own build, BIN_DIR; by default the
#   release build), the shared libraries `ldd` reports for it
#   (at the same paths, plus the dynamic loader), a minimal /etc/passwd and /etc/group
#   with the unprivileged user `kmsd` (uid 10001), /tmp, and an empty /data owned by it.
#
# No registry is needed (nothing is pulled). Idempotent: the image carries a label with
# the hash of everything that goes into it, and nothing is rebuilt while it matches.
# Environment: IMAGE (default kms-cluster-test:latest), CARGO (default cargo), BIN_DIR (a
# directory holding a built kmsd; the tests pass theirs, so a test run compiles kmsd once).
set -euo pipefail

IMAGE="${IMAGE:-kms-cluster-test:latest}"
CARGO="${CARGO:-cargo}"
LABEL="org.kms-cluster.test.inputs"
UID_KMSD=10001

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v docker >/dev/null; then
    echo "build-image.sh: docker is not on PATH (the container tests need Docker Engine)" >&2
    exit 1
fi

if [ -n "${BIN_DIR:-}" ]; then
    bin="$BIN_DIR/kmsd"
else
    "$CARGO" build --release -q -p kmsd -p kmsctl
    bin="${CARGO_TARGET_DIR:-target}/release/kmsd"
fi
if [ ! -x "$bin" ]; then
    echo "build-image.sh: $bin is not an executable" >&2
    exit 1
fi

# Shared libraries as ldd reports them: `name => /path (addr)` and the loader
# `/lib64/ld-linux-x86-64.so.2 (addr)`; the vDSO has no file.
mapfile -t libs < <(ldd "$bin" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }')
if [ "${#libs[@]}" -eq 0 ]; then
    echo "build-image.sh: ldd reported no libraries for $bin (static binary?)" >&2
fi

# Everything that decides the image's content: this script, the binary, the libraries.
inputs="$(sha256sum "${BASH_SOURCE[0]}" "$bin" "${libs[@]}" | awk '{ print $1 }' | sha256sum | awk '{ print $1 }')"
current="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
old_id="$(docker image inspect --format '{{ .Id }}' "$IMAGE" 2>/dev/null || true)"
if [ "$current" = "$inputs" ]; then
    echo "build-image.sh: $IMAGE is up to date"
    exit 0
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$ctx/data"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/kmsd"
for lib in "${libs[@]}"; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/:/sbin/nologin
kmsd:x:$UID_KMSD:$UID_KMSD:kmsd:/data:/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
kmsd:x:$UID_KMSD:
EOF
# Peer names (network aliases) resolve through Docker's DNS.
echo "hosts: files dns" >"$root/etc/nsswitch.conf"

cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=$UID_KMSD:$UID_KMSD data/ /data/
LABEL $LABEL="$inputs"
USER $UID_KMSD
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/kmsd"]
EOF

echo "build-image.sh: building $IMAGE"
# The classic builder (no BuildKit/buildx needed); its deprecation notice is noise here.
if ! DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2
    echo "build-image.sh: docker build failed" >&2
    exit 1
fi
# Drop the image this one replaces (fails harmlessly while a container still uses it).
new_id="$(docker image inspect --format '{{ .Id }}' "$IMAGE")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
echo "build-image.sh: built $IMAGE ($(docker image inspect --format '{{ .Size }}' "$IMAGE") bytes)"
