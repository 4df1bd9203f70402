#!/usr/bin/env bash
# The quick start: builds check, in and out, creates a lock repository in a
# temp dir (with the git CLI, as an operator would), and runs one real
# acquire -> get -> release cycle and a check through the binaries, printing
# each request and the JSON Concourse would see. The build log (stderr) of
# each step is shown indented.
#
#   ci/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v git >/dev/null 2>&1; then
    echo "ci/demo.sh: installing git" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >&2
fi
if ! pkg-config --exists openssl 2>/dev/null; then
    echo "ci/demo.sh: installing pkg-config and libssl-dev" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libssl-dev >&2
fi
cargo build --locked --quiet --bins
bin=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/debug

work=$(mktemp -d "${TMPDIR:-/tmp}/pool-resource-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=operator GIT_AUTHOR_EMAIL=operator@localhost
export GIT_COMMITTER_NAME=operator GIT_COMMITTER_EMAIL=operator@localhost

# A lock repository with one pool, "environments", holding two free locks.
git init -q --bare -b main "$work/locks.git"
git init -q -b main "$work/seed"
mkdir -p "$work/seed/environments/claimed" "$work/seed/environments/unclaimed"
touch "$work/seed/environments/claimed/.gitkeep" "$work/seed/environments/unclaimed/.gitkeep"
printf 'api: https://staging.example.com\n' > "$work/seed/environments/unclaimed/staging"
printf 'api: https://qa.example.com\n' > "$work/seed/environments/unclaimed/qa"
git -C "$work/seed" add -A
git -C "$work/seed" commit -q -m 'adding unclaimed: staging, qa'
git -C "$work/seed" push -q "$work/locks.git" main

# What Concourse sets for a get or put of build 7 of job deploy.
export BUILD_ID=1234 BUILD_NAME=7 BUILD_JOB_NAME=deploy BUILD_PIPELINE_NAME=app \
    BUILD_TEAM_NAME=main ATC_EXTERNAL_URL=https://ci.example.com
source="{\"uri\": \"$work/locks.git\", \"branch\": \"main\", \"pool\": \"environments\"}"

# step TITLE BINARY DIR REQUEST: runs one step as Concourse would.
step() {
    # Pasteable from the repository's root: `in` alone is a bash keyword.
    printf "\n== %s\n\$ echo '%s' | %s/%s%s\n" "$1" "$4" "${bin#"$PWD"/}" "$2" "${3:+ $3}"
    local out status=0
    out=$(printf '%s' "$4" | "$bin/$2" ${3:+"$3"} 2>"$work/log") || status=$?
    sed 's/^/   | /' "$work/log"
    if [ "$status" -ne 0 ]; then
        echo "ci/demo.sh: $2 failed (exit $status)" >&2
        exit 1
    fi
    printf '%s\n' "$out"
    last=$out
}

mkdir -p "$work/build"
step "put: acquire a lock" out "$work/build" "{\"source\": $source, \"params\": {\"acquire\": true}}"
ref=$(printf '%s' "$last" | sed 's/.*"ref":"\([0-9a-f]*\)".*/\1/')

step "get: the implicit get of that version" in "$work/build/lock" \
    "{\"source\": $source, \"version\": {\"ref\": \"$ref\"}}"
printf -- '-- lock/name: %s' "$(cat "$work/build/lock/name")"
printf '\n-- lock/metadata: %s\n' "$(cat "$work/build/lock/metadata")"

step "put: release it" out "$work/build" "{\"source\": $source, \"params\": {\"release\": \"lock\"}}"

step "check: the pool's versions since the acquire" check "" \
    "{\"source\": $source, \"version\": {\"ref\": \"$ref\"}}"

printf '\n== the lock repository now\n'
git -C "$work/locks.git" log --format='%h %s%n%w(0,8,8)%b' main
