#!/usr/bin/env bash
# Builds the resource image from the real Dockerfile without a Docker engine or
# registry access, runs check, in and out inside it against a git server on
# this machine, and prints the image size.
#
#   ci/build-and-test-image.sh
#
# 1. Compiles static release binaries here and lays out the image's files
#    with ci/build-rootfs.sh, as the Dockerfile's builder stage does (musl,
#    `--features vendored`, the Dockerfile's `ENV CARGO_*` settings), in
#    $CARGO_TARGET_DIR (default target/image; reruns are incremental).
# 2. Builds the Dockerfile's final stage from them with `buildah bud
#    --isolation chroot --build-arg BINARIES_FROM=prebuilt`, so only
#    `FROM scratch` has to be resolved.
# 3. Serves a lock repository with `git daemon` on 127.0.0.1 and drives a
#    whole acquire / get / release / check cycle through `podman run
#    --network host`, asserting every JSON document and the repository.
#
# Installs what it needs when missing (buildah, podman, runc, musl-tools, jq,
# the rustup musl target) and can be run again and again.
#
# Environment: IMAGE (default localhost/pool-resource:dev), CARGO_TARGET_DIR,
# IMAGE_MAX_BYTES (default 15000000: fail above it).
#
# Exit status: 0 when the image works; 77 when buildah, podman, runc or the
# musl Rust target cannot be installed, or buildah or podman cannot be used
# here (nothing was verified; a line starting with SKIP: says why); anything
# else is a failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

image=${IMAGE:-localhost/pool-resource:dev}
target_dir=${CARGO_TARGET_DIR:-$root/target/image}
max_bytes=${IMAGE_MAX_BYTES:-15000000}
ca_bundle=/etc/ssl/certs/ca-certificates.crt
# --unsetenv-all: no PATH, HOME or TERM, as bare as a Concourse container.
podman_run=(podman run --rm -i --runtime runc --network host --unsetenv-all
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# What Concourse sets for get and put.
build_env=(--env BUILD_ID=42 --env BUILD_NAME=7 --env BUILD_JOB_NAME=deploy
    --env BUILD_PIPELINE_NAME=app --env BUILD_TEAM_NAME=main
    --env ATC_EXTERNAL_URL=https://ci.example.com)

step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIP: %s\n' "$*" >&2; exit 77; }
now() { date +%s; }
started=$(now)

# --- tools ---------------------------------------------------------------

apt_updated=
apt_install() {
    if ! command -v apt-get >/dev/null; then
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || return 1
        sudo=(sudo -n)
    fi
    if [ -z "$apt_updated" ]; then
        "${sudo[@]}" apt-get update -qq >&2 || return 1
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

# need COMMAND PACKAGE: installs PACKAGE unless COMMAND is on PATH.
need() {
    command -v "$1" >/dev/null && return 0
    step "installing $2 (for $1)"
    apt_install "$2" && command -v "$1" >/dev/null
}

step "checking tools"
need buildah buildah || skip "buildah is not installed and could not be installed"
need podman podman || skip "podman is not installed and could not be installed"
need runc runc || skip "runc is not installed and could not be installed"
need musl-gcc musl-tools || fail "musl-gcc is missing and musl-tools could not be installed"
need readelf binutils || fail "readelf is missing and binutils could not be installed"
need jq jq || fail "jq is missing and could not be installed"
need git git || fail "git is missing and could not be installed"
[ -s "$ca_bundle" ] || need update-ca-certificates ca-certificates ||
    fail "$ca_bundle is missing and ca-certificates could not be installed"
[ -s "$ca_bundle" ] || fail "$ca_bundle is missing"

# Whether their storage and configuration work here, before a long build.
buildah info >/dev/null 2>&1 || skip "buildah cannot be used here: $(buildah info 2>&1 | tail -n 1)"
podman info >/dev/null 2>&1 || skip "podman cannot be used here: $(podman info 2>&1 | tail -n 1)"
if ! probe=$(buildah from --quiet scratch 2>&1); then
    skip "buildah cannot create a working container here: $probe"
fi
buildah rm "$probe" >/dev/null

case "$(uname -m)" in
    x86_64) triple=x86_64-unknown-linux-musl arch=amd64 ;;
    aarch64) triple=aarch64-unknown-linux-musl arch=arm64 ;;
    *) fail "no musl target known for $(uname -m)" ;;
esac
if ! rustup target list --installed | grep -qx "$triple"; then
    step "adding the Rust target $triple"
    rustup target add "$triple" >&2 || skip "the Rust target $triple could not be installed"
fi

# --- binaries and image --------------------------------------------------

# The cargo settings the Dockerfile's toolchain stage sets with ENV.
while read -r setting; do
    export "${setting#ENV }"
done < <(grep -E '^ENV CARGO_[A-Z0-9_]+=[^ ]+$' Dockerfile)

step "building static binaries for $triple in $target_dir"
t0=$(now)
context=$target_dir/image-context
mkdir -p "$context"
CARGO_TARGET_DIR=$target_dir CA_BUNDLE=$ca_bundle \
    sh ci/build-rootfs.sh "$triple" "$context/rootfs" >&2
t_binaries=$(($(now) - t0))

version=$(cargo pkgid --offline 2>/dev/null | sed 's/.*[#@]//')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    revision=$revision-dirty
fi

step "building $image from Dockerfile (final stage, BINARIES_FROM=prebuilt)"
t0=$(now)
previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
buildah bud --isolation chroot --quiet \
    --file "$root/Dockerfile" --target final \
    --build-arg BINARIES_FROM=prebuilt \
    --build-arg TARGETARCH="$arch" \
    --build-arg VERSION="${version:-dev}" \
    --build-arg REVISION="$revision" \
    --tag "$image" "$context" >&2
t_image=$(($(now) - t0))
# Reruns must not pile up images: drop the one this tag named before, and
# the untagged intermediate image of the prebuilt stage.
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$image")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
podman images --quiet --filter dangling=true \
    --filter label=org.pool-resource.stage=prebuilt | sort -u |
    while read -r id; do podman rmi --force "$id" >/dev/null 2>&1 || true; done

# --- what is in the image ------------------------------------------------

step "checking the files and labels of $image"
work=$(mktemp -d "${TMPDIR:-/tmp}/pool-resource-image.XXXXXX")
daemon_pid=
container=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    if [ -n "$container" ]; then
        podman rm --force "$container" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

container=$(podman create --runtime runc "$image" /opt/resource/check)
podman export --output "$work/fs.tar" "$container"
tar -tf "$work/fs.tar" | sed 's:^\./::; s:/$::' | grep -v '^\.\?$' | sort > "$work/files"
podman rm "$container" >/dev/null
container=
printf '%s\n' etc etc/ssl etc/ssl/certs \
    etc/ssl/certs/ca-certificates.crt opt opt/resource opt/resource/check \
    opt/resource/in opt/resource/out opt/resource/pool tmp | sort > "$work/expected-files"
if ! diff -u "$work/expected-files" "$work/files" >&2; then
    fail "the image holds other files than expected (diff above: - expected, + found)"
fi

# in, out and pool are hard links to check: the image holds the binary once.
links=$(tar -tvf "$work/fs.tar" | grep -cE 'opt/resource/(in|out|pool) link to \.?/?opt/resource/check$' || true)
[ "$links" -eq 3 ] || fail "opt/resource/in, out and pool are not hard links to check in the image: $(tar -tvf "$work/fs.tar" | grep opt/resource)"

labels=$(podman image inspect --format '{{json .Labels}}' "$image")
for label in org.opencontainers.image.source org.opencontainers.image.version \
    org.opencontainers.image.licenses; do
    jq -e --arg l "$label" '.[$l] | strings | length > 0' <<<"$labels" >/dev/null ||
        fail "label $label is missing: $labels"
done
jq -e '.["org.opencontainers.image.licenses"] == "Apache-2.0"' <<<"$labels" >/dev/null ||
    fail "the licence label is not Apache-2.0: $labels"

# --- a lock repository on git:// -----------------------------------------

step "serving a lock repository with git daemon on 127.0.0.1"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME=$work
export GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@localhost
export GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@localhost
git init -q --bare -b main "$work/locks.git"
git init -q -b main "$work/seed"
mkdir -p "$work/seed/deploy/claimed" "$work/seed/deploy/unclaimed"
touch "$work/seed/deploy/claimed/.gitkeep" "$work/seed/deploy/unclaimed/.gitkeep"
printf 'env=staging\n' > "$work/seed/deploy/unclaimed/staging"
git -C "$work/seed" add -A
git -C "$work/seed" commit -q -m 'adding unclaimed: staging'
git -C "$work/seed" push -q "$work/locks.git" main
first=$(git -C "$work/locks.git" rev-parse main)

port=
for _ in $(seq 1 20); do
    candidate=$((20000 + RANDOM % 40000))
    git daemon --reuseaddr --export-all --enable=receive-pack \
        --listen=127.0.0.1 --port="$candidate" --base-path="$work" "$work" \
        </dev/null >/dev/null 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 100); do
        if git ls-remote "git://127.0.0.1:$candidate/locks.git" >/dev/null 2>&1; then
            port=$candidate
            break 2
        fi
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.05
    done
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=
done
[ -n "$port" ] || fail "could not start git daemon on a free port of 127.0.0.1"
uri=git://127.0.0.1:$port/locks.git
source_json=$(jq -cn --arg uri "$uri" '{uri: $uri, branch: "main", pool: "deploy", retry_delay: "100ms"}')

# run_resource NAME ARG REQUEST [VOLUME...]: runs /opt/resource/NAME ARG in
# the image with REQUEST on stdin; prints its stdout, shows its stderr.
run_resource() {
    local name=$1 arg=$2 request=$3
    shift 3
    local volumes=() v
    for v in "$@"; do volumes+=(--volume "$v"); done
    local cmd=("${podman_run[@]}" "${volumes[@]}")
    [ "$name" = check ] || cmd+=("${build_env[@]}")
    cmd+=("$image" "/opt/resource/$name")
    [ -n "$arg" ] && cmd+=("$arg")
    local out
    if ! out=$("${cmd[@]}" <<<"$request" 2>"$work/stderr"); then
        cat "$work/stderr" >&2
        fail "$name failed in the image; request: $request"
    fi
    sed "s/^/    $name: /" "$work/stderr" >&2
    printf '%s' "$out"
}

# --- check, out, in, out, check inside the image -------------------------

step "check (no version)"
out=$(run_resource check "" "$(jq -cn --argjson s "$source_json" '{source: $s}')")
jq -e --arg ref "$first" '. == [{ref: $ref}]' <<<"$out" >/dev/null ||
    fail "check did not report the only version $first; got: $out"

step "out: acquire"
mkdir -p "$work/put"
out=$(run_resource out /tmp/build/put \
    "$(jq -cn --argjson s "$source_json" '{source: $s, params: {acquire: true}}')" \
    "$work/put:/tmp/build/put")
claimed=$(git -C "$work/locks.git" rev-parse main)
jq -e --arg ref "$claimed" '.version == {ref: $ref}
    and .metadata[0:2] == [{name: "lock_name", value: "staging"}, {name: "pool_name", value: "deploy"}]
    and (.metadata | from_entries | .claimed_by) == "main/app/deploy #7"' \
    <<<"$out" >/dev/null || fail "acquire printed $out, the branch is at $claimed"
git -C "$work/locks.git" cat-file -e main:deploy/claimed/staging ||
    fail "acquire did not move deploy/unclaimed/staging to deploy/claimed"
[ "$(git -C "$work/locks.git" log -1 --format=%s main)" = "claiming: staging" ] ||
    fail "acquire's commit is not 'claiming: staging'"

step "in: the acquired lock"
mkdir -p "$work/get"
out=$(run_resource in /tmp/build/get \
    "$(jq -cn --argjson s "$source_json" --arg ref "$claimed" '{source: $s, version: {ref: $ref}}')" \
    "$work/get:/tmp/build/get")
jq -e --arg ref "$claimed" '.version == {ref: $ref}
    and .metadata[0:2] == [{name: "lock_name", value: "staging"}, {name: "pool_name", value: "deploy"}]
    and (.metadata | from_entries | .claimed_by) == "main/app/deploy #7"' \
    <<<"$out" >/dev/null || fail "in printed $out for $claimed"
[ "$(cat "$work/get/claim")" = "$claimed" ] || fail "in wrote claim '$(cat "$work/get/claim")'"
[ "$(cat "$work/get/name")" = staging ] || fail "in wrote name '$(cat "$work/get/name")'"
[ "$(cat "$work/get/metadata")" = env=staging ] ||
    fail "in wrote metadata '$(cat "$work/get/metadata")'"

step "out: release the lock from the get directory"
mkdir -p "$work/release"
cp -r "$work/get" "$work/release/staging-lock"
out=$(run_resource out /tmp/build/put \
    "$(jq -cn --argjson s "$source_json" '{source: $s, params: {release: "staging-lock"}}')" \
    "$work/release:/tmp/build/put")
released=$(git -C "$work/locks.git" rev-parse main)
jq -e --arg ref "$released" '.version == {ref: $ref}' <<<"$out" >/dev/null ||
    fail "release printed $out, the branch is at $released"
git -C "$work/locks.git" cat-file -e main:deploy/unclaimed/staging ||
    fail "release did not move the lock back to deploy/unclaimed"
[ "$(git -C "$work/locks.git" log -1 --format=%s main)" = "unclaiming: staging" ] ||
    fail "release's commit is not 'unclaiming: staging'"

step "check (from the first version)"
out=$(run_resource check "" \
    "$(jq -cn --argjson s "$source_json" --arg ref "$first" '{source: $s, version: {ref: $ref}}')")
jq -e --arg a "$first" --arg b "$claimed" --arg c "$released" \
    '. == [{ref: $a}, {ref: $b}, {ref: $c}]' <<<"$out" >/dev/null ||
    fail "check from $first did not list the three versions oldest first; got: $out"

step "pool status --json (the operator command, source from POOL_SOURCE)"
if ! out=$("${podman_run[@]}" --env "POOL_SOURCE=$source_json" "$image" \
    /opt/resource/pool status --json 2>"$work/stderr"); then
    cat "$work/stderr" >&2
    fail "pool status failed in the image"
fi
jq -e '[.. | objects | select(has("state")) | .state] | length >= 1' <<<"$out" >/dev/null ||
    fail "pool status --json printed no lock states: $out"
grep -q '"staging"' <<<"$out" || fail "pool status --json does not name lock staging: $out"

step "no shell in the image"
if "${podman_run[@]}" "$image" /bin/sh -c true >/dev/null 2>&1; then
    fail "/bin/sh runs in the image"
fi

# --- size ----------------------------------------------------------------

size=$(podman image inspect --format '{{.Size}}' "$image")
# What a worker downloads: the one layer, gzip-compressed as registries keep it.
compressed=$(gzip -6 < "$work/fs.tar" | wc -c)
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
printf '\nimage %s: %s (%s bytes), %s gzip-compressed; binaries %ss, image %ss, total %ss\n' \
    "$image" "$(mb "$size")" "$size" "$(mb "$compressed")" \
    "$t_binaries" "$t_image" "$(($(now) - started))"
printf '  /opt/resource/{check,in,out,pool}: one binary of %s bytes, %s links\n' \
    "$(wc -c < "$context/rootfs/opt/resource/check")" \
    "$(stat -c %h "$context/rootfs/opt/resource/check")"
if [ "$size" -gt "$max_bytes" ]; then
    fail "the image is $size bytes, more than IMAGE_MAX_BYTES=$max_bytes"
fi
echo "ok: $image runs check, in and out"
