#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the servers the
# integration tests start (git daemon and git http-backend come with git,
# sshd with openssh-server, Chromium and promtool for the pool serve tests)
# when they are missing, then runs every test.
# The image tests install buildah, podman and musl-tools themselves
# (ci/build-and-test-image.sh).
#
#   ci/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=
need() { # need COMMAND PACKAGE...
    command -v "$1" >/dev/null 2>&1 && return 0
    [ -x "$1" ] && return 0
    local cmd=$1
    shift
    echo "ci/test.sh: installing $* (for $cmd)" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    if [ -z "$apt_updated" ]; then
        "${sudo[@]}" apt-get update -qq >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

need git git
need ssh-keygen openssh-client
need /usr/sbin/sshd openssh-server
need update-ca-certificates ca-certificates
need cc gcc
need make make
# tests/serve.rs: the page in headless Chromium, /metrics through promtool.
need chromium chromium
need promtool prometheus
need pkg-config pkg-config
# openssl-sys links the system OpenSSL outside the image build.
pkg-config --exists openssl || need /nonexistent/openssl-headers libssl-dev

# Unit tests, the binaries and the integration suite (there are no doc
# tests); then one line with the totals over every test binary.
# A test that cannot run here (the image tests without buildah/podman)
# records a SKIPPED line in $POOL_TEST_SKIP_LOG: it is shown and counted as
# skipped, not passed.
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export POOL_TEST_SKIP_LOG="$skips"
status=0
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
cat "$skips"
awk -v skipped="$(grep -c '^SKIPPED: ' "$skips" || true)" '
     /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) p += $i
            if ($(i + 1) ~ /^failed;?$/) f += $i
            if ($(i + 1) ~ /^ignored;?$/) s += $i
        }
     }
     END { printf "total: %d passed, %d failed, %d skipped\n", p - skipped, f, s + skipped }' "$log"
exit "$status"
