#!/usr/bin/env bash
# Builds the repository's Dockerfile without any container registry, as `kms-cluster:local`.
#
# With a registry, build the image the normal way instead:
#
#   docker build -t kms-cluster:<version> .
#
# Without one neither `debian:bookworm-slim` nor `rust:*-bookworm` can be pulled, so:
#
#  1. the base image `debian:bookworm-slim` is made locally: `debootstrap --variant=minbase
#     bookworm` (plus ca-certificates) from the Debian mirror this machine's apt uses, into
#     a cache directory, then `docker import`ed under that tag. Skipped when an image with
#     that tag already exists (a real one, or one made earlier by this script);
#  2. `kmsd` and `kmsctl` are built on the host (`cargo build --release`) instead of in the
#     Dockerfile's `build` stage (its Rust image cannot be pulled either), copied to
#     target/docker-prebuilt/ in the repository (also when CARGO_TARGET_DIR points
#     elsewhere: that directory is the one the build context holds), and the Dockerfile is built up to its `runtime-prebuilt`
#     target: the same runtime stage as the default target, taking those binaries. The
#     classic builder builds every stage up to the target, so that target comes before the
#     Rust stage in the Dockerfile and uses only the base image.
#
# The host binaries are dynamically linked against glibc: the script checks that the
# newest GLIBC_x.y symbol version they need is provided by the base image's glibc (a
# bookworm host and bookworm base both have 2.36) and stops with an explanation otherwise.
#
# Idempotent: the image carries a label with the hash of everything that goes into it
# (Dockerfile, .dockerignore, health check, this script, binaries, base image id); nothing
# is rebuilt while it matches.
#
# Environment:
#   IMAGE           tag to build (default kms-cluster:local)
#   BASE_IMAGE      base image tag (default debian:bookworm-slim, the Dockerfile's default)
#   DEBIAN_MIRROR   mirror for debootstrap (default: the bookworm mirror in /etc/apt
#                   sources, else http://deb.debian.org/debian)
#   CACHE_DIR       where the debootstrapped root filesystem is kept
#                   (default target/docker-local)
#   CARGO           cargo command (default cargo)
#   BIN_DIR         a directory holding kmsd and kmsctl built already (the test suite passes
#                   its own build); default: `cargo build --release` and target/release
set -euo pipefail

IMAGE="${IMAGE:-kms-cluster:local}"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
CARGO="${CARGO:-cargo}"
LABEL="org.kms-cluster.local.inputs"
BASE_LABEL="org.kms-cluster.local.base"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root_dir="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$root_dir/target}"
CACHE_DIR="${CACHE_DIR:-$target_dir/docker-local}"
say() { echo "build-local.sh: $*" >&2; }

if ! command -v docker >/dev/null; then
    say "docker is not on PATH (Docker Engine is needed)"
    exit 1
fi

# ---- 1. the base image ----------------------------------------------------------------

# The mirror apt uses for bookworm: deb822 (`URIs:` of a stanza whose `Suites:` has
# bookworm) or one-line (`deb URL bookworm ...`) sources.
detect_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk '
            /^[[:space:]]*$/ { if (uri != "" && bw) { print uri; found = 1; exit } uri = ""; bw = 0; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") bw = 1 }
            END { if (!found && uri != "" && bw) print uri }
        ' "$f"
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($(i + 1) == "bookworm") print $i; break } }' ||
        true
}

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE exists"
else
    if ! command -v debootstrap >/dev/null; then
        say "$BASE_IMAGE is not available and debootstrap is not installed (apt-get install debootstrap)"
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        say "debootstrap needs root to make $BASE_IMAGE; run this script as root once"
        exit 1
    fi
    mirror="${DEBIAN_MIRROR:-$(detect_mirror | awk 'NR == 1')}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rootfs="$CACHE_DIR/bookworm-minbase"
    if [ ! -e "$rootfs/.complete" ]; then
        say "debootstrap --variant=minbase bookworm from $mirror into $rootfs"
        rm -rf "$rootfs"
        mkdir -p "$CACHE_DIR"
        debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" \
            >"$CACHE_DIR/debootstrap.log" 2>&1 || {
            tail -n 30 "$CACHE_DIR/debootstrap.log" >&2
            say "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"
            exit 1
        }
        # Slim it down like the official -slim image: no package lists, caches, manuals.
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
            "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
        # The image gets Docker's own resolv.conf and hosts; apt points at the public mirror.
        : >"$rootfs/etc/resolv.conf"
        echo "deb http://deb.debian.org/debian bookworm main" >"$rootfs/etc/apt/sources.list"
        touch "$rootfs/.complete"
    fi
    say "importing $rootfs as $BASE_IMAGE"
    tar --numeric-owner --exclude=./.complete -C "$rootfs" -c . |
        docker import \
            --change 'CMD ["bash"]' \
            --change "LABEL $BASE_LABEL=debootstrap-minbase-bookworm" \
            - "$BASE_IMAGE" >/dev/null
fi
base_id="$(docker image inspect --format '{{ .Id }}' "$BASE_IMAGE")"

# ---- 2. host-built binaries -------------------------------------------------------------

# BIN_DIR: binaries built elsewhere (the test suite passes its own build, so that a test run
# compiles kmsd once); by default the release build.
if [ -n "${BIN_DIR:-}" ]; then
    bin_dir="$BIN_DIR"
else
    "$CARGO" build --release -q -p kmsd -p kmsctl
    bin_dir="$target_dir/release"
fi
for b in kmsd kmsctl; do
    if [ ! -x "$bin_dir/$b" ]; then
        say "$bin_dir/$b is not an executable (BIN_DIR must hold kmsd and kmsctl)"
        exit 1
    fi
done
# Inside the build context, wherever cargo's target directory is: the Dockerfile copies
# target/docker-prebuilt/ (and .dockerignore lets only those two files through).
prebuilt="$root_dir/target/docker-prebuilt"
mkdir -p "$prebuilt"
for b in kmsd kmsctl; do
    if ! cmp -s "$bin_dir/$b" "$prebuilt/$b"; then
        cp "$bin_dir/$b" "$prebuilt/$b"
    fi
done

# glibc: the newest GLIBC_x.y the binaries need vs the base image's glibc.
need="$(objdump -T "$prebuilt/kmsd" "$prebuilt/kmsctl" | grep -o 'GLIBC_[0-9][0-9.]*' |
    sed 's/GLIBC_//' | sort -V | tail -n1)"
have="$(docker run --rm --network none --entrypoint /usr/bin/ldd "$BASE_IMAGE" --version |
    awk 'NR == 1' | grep -o '[0-9][0-9]*\.[0-9][0-9]*$' || true)"
if [ -z "$need" ] || [ -z "$have" ]; then
    say "cannot tell glibc versions (binaries need '${need}', $BASE_IMAGE has '${have}')"
    exit 1
fi
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -n1)" != "$have" ]; then
    say "the host binaries need glibc $need but $BASE_IMAGE has $have: build on a host whose"
    say "glibc is not newer than $have (e.g. Debian bookworm), or use the Dockerfile's default target"
    exit 1
fi
# Every shared library the binaries load must exist in the base image.
mapfile -t sonames < <(objdump -p "$prebuilt/kmsd" "$prebuilt/kmsctl" | awk '$1 == "NEEDED" { print $2 }' | sort -u)
for so in "${sonames[@]}"; do
    if ! docker run --rm --network none --entrypoint /bin/sh "$BASE_IMAGE" -c \
        "ldconfig -p | grep -q '[[:space:]]$so '" >/dev/null 2>&1; then
        say "$so (needed by kmsd/kmsctl) is missing from $BASE_IMAGE"
        exit 1
    fi
done
say "binaries need glibc >= $need, $BASE_IMAGE has $have; libraries: ${sonames[*]}"

# ---- 3. the image ------------------------------------------------------------------------

inputs="$(
    {
        sha256sum Dockerfile .dockerignore docker/kms-healthcheck "${BASH_SOURCE[0]}" "$prebuilt/kmsd" "$prebuilt/kmsctl" | awk '{ print $1 }'
        echo "$base_id"
    } | sha256sum | awk '{ print $1 }'
)"
current="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
old_id="$(docker image inspect --format '{{ .Id }}' "$IMAGE" 2>/dev/null || true)"
if [ "$current" = "$inputs" ]; then
    say "$IMAGE is up to date"
    exit 0
fi

say "building $IMAGE (Dockerfile target runtime-prebuilt)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The classic builder: no BuildKit/buildx needed, and it uses the local base image as is.
if ! DOCKER_BUILDKIT=0 docker build -q --target runtime-prebuilt \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "$LABEL=$inputs" \
    -t "$IMAGE" . >"$log" 2>&1; then
    cat "$log" >&2
    say "docker build failed"
    exit 1
fi
new_id="$(docker image inspect --format '{{ .Id }}' "$IMAGE")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
say "built $IMAGE ($(docker image inspect --format '{{ .Size }}' "$IMAGE") bytes)"
