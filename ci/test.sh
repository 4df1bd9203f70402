#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the servers the
# integration tests start (git daemon and git http-backend come with git,
# sshd with openssh-server, Chromium and promtool for the pool serve tests)
# when they are missing, then runs every test but those run on demand.
# The image tests install buildah, podman and musl-tools themselves
# (ci/build-and-test-image.sh).
#
#   ci/test.sh [extra cargo test args] [-- extra test binary args]
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
#
# Tests that need a tool plain `cargo test` may lack (Chromium, promtool,
# buildah and podman) are `#[ignore = "needs ..."]`: this script installed
# the tools (the image tests install theirs), so it runs them with
# --include-ignored. Every other #[ignore] marks a test run on demand only
# (minutes long, or a measurement): those are left out with --skip NAME and
# counted as skipped.
# A test that still cannot run here (the image tests without a usable
# buildah/podman) records a SKIPPED line in $POOL_TEST_SKIP_LOG: it is shown
# and counted as skipped, not passed.
cargo_args=()
test_args=()
for arg in "$@"; do # [cargo test args] [-- test binary args]
    if [ "${#test_args[@]}" -gt 0 ] || [ "$arg" = -- ]; then
        test_args+=("$arg")
    else
        cargo_args+=("$arg")
    fi
done
if [ "${#test_args[@]}" -gt 0 ]; then
    test_args=("${test_args[@]:1}") # without the --
fi
mapfile -t on_demand < <(find src tests -name '*.rs' -print0 | xargs -0 awk '
    /^[[:space:]]*#\[ignore/ { want = ($0 !~ /#\[ignore = "needs /); next }
    /^[[:space:]]*(pub(\([a-z]+\))? )?fn [A-Za-z0-9_]+/ {
        if (want) { name = $0; sub(/^.*fn /, "", name); sub(/[^A-Za-z0-9_].*$/, "", name); print name }
        want = 0
    }' | sort -u)
skip_on_demand=()
for name in "${on_demand[@]}"; do
    skip_on_demand+=(--skip "$name")
done

# The library's folders import only lower layers (the table in the script)
# and its files one another without a cycle (issues 17, 25); the self-test
# shows that both checks fail on an edge against them.
python3 ci/import-graph.py --self-test
python3 ci/import-graph.py

log=$(mktemp)
skips=$(mktemp)
not_run=$(mktemp)
trap 'rm -f "$log" "$skips" "$not_run"' EXIT
export POOL_TEST_SKIP_LOG="$skips"
status=0
cargo test --locked --lib --bins --tests "${cargo_args[@]}" \
    -- --include-ignored "${skip_on_demand[@]}" "${test_args[@]}" 2>&1 | tee "$log" || status=$?
cat "$skips"
# The on-demand tests this run would have had (the ignored ones its filters
# select, by the names --skip left out).
if [ "${#on_demand[@]}" -gt 0 ]; then
    cargo test --locked --lib --bins --tests "${cargo_args[@]}" \
        -- --list --ignored "${test_args[@]}" 2>/dev/null |
        sed -n 's/: test$//p' |
        grep -F -f <(printf '%s\n' "${on_demand[@]}") |
        sed 's/$/: on demand only (#[ignore]), not run here/; s/^/SKIPPED: /' >"$not_run" || true
    cat "$not_run"
fi
awk -v skipped="$(grep -c '^SKIPPED: ' "$skips" || true)" \
    -v not_run="$(grep -c '^SKIPPED: ' "$not_run" || true)" '
     /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) p += $i
            if ($(i + 1) ~ /^failed;?$/) f += $i
            if ($(i + 1) ~ /^ignored;?$/) s += $i
        }
     }
     END { printf "total: %d passed, %d failed, %d skipped\n", p - skipped, f, s + skipped + not_run }' "$log"
# Why each failed test failed, again at the end where a CI page that keeps
# only the tail of the output still shows it: each panic's message (up to
# 30 lines, without its backtrace), under the test's name.
if [ "$status" -ne 0 ]; then
    awk '
        /^---- .* stdout ----$/ { name = $2; shown = 0; next }
        /^thread .* panicked at / && name != "" { print "why " name " failed:"; shown = 30 }
        /^stack backtrace:$/ || /^note: run with `RUST_BACKTRACE/ { shown = 0 }
        shown > 0 { print "  " $0; shown-- }
    ' "$log"
fi
exit "$status"
