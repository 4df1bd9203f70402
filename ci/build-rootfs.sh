#!/bin/sh
# Builds the static release binaries and lays out the root filesystem of the
# resource image. The Dockerfile's builder stage and ci/build-and-test-image.sh
# both run this, so the image has the same files whichever way it is built.
#
#   ci/build-rootfs.sh TARGET_TRIPLE ROOTFS
#
# TARGET_TRIPLE is a *-unknown-linux-musl target; CARGO_TARGET_DIR is honoured
# (default: the repository's target/). ROOTFS is replaced. CA_BUNDLE (default
# /etc/ssl/certs/ca-certificates.crt) is the PEM file of trusted CAs to ship.
#
# What goes in, and why:
#   /opt/resource/{check,in,out}         the Concourse resource protocol, and
#   /opt/resource/pool                   the operator controls: one binary,
#                                        four hard links
#   /etc/ssl/certs/ca-certificates.crt   HTTPS to git servers and AWS; workers
#                                        may mount their own certs over it
#   /tmp (1777)                          temp files (SSH keys, check's cache);
#                                        Concourse sets no TMPDIR
# Nothing else: no /etc/passwd (libgit2 and libssh2 need no home directory;
# the image test runs them with an empty environment), no shell, no git.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 TARGET_TRIPLE ROOTFS" >&2
    exit 2
fi
triple=$1
rootfs=$2
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

case "$triple" in
    *-linux-musl*) ;;
    *) echo "error: $triple is not a musl target; the image has no libc" >&2; exit 1 ;;
esac
if ! grep -q 'BEGIN CERTIFICATE' "$ca_bundle"; then
    echo "error: $ca_bundle holds no PEM certificates" >&2
    exit 1
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
# vendored: libgit2, libssh2 and OpenSSL built from source and linked in.
# One multi-call binary (bin/pool-resource.rs), hard-linked as check, in and
# out: the three would be the same 13 MB of code three times over, and one
# LTO link takes a third of the time of three.
cargo build --manifest-path "$repo/Cargo.toml" --locked --release --features vendored \
    --bin pool-resource --target "$triple"
binary=${CARGO_TARGET_DIR:-$repo/target}/$triple/release/pool-resource

# A dynamically linked binary names its loader in a PT_INTERP header; the
# image has no loader, so such a binary could not even start.
if readelf --program-headers "$binary" | grep -q INTERP; then
    echo "error: $binary is dynamically linked" >&2
    exit 1
fi

rm -rf "$rootfs"
mkdir -p "$rootfs/opt/resource" "$rootfs/etc/ssl/certs"
cp "$binary" "$rootfs/opt/resource/check"
chmod 0755 "$rootfs/opt/resource/check"
ln "$rootfs/opt/resource/check" "$rootfs/opt/resource/in"
ln "$rootfs/opt/resource/check" "$rootfs/opt/resource/out"
ln "$rootfs/opt/resource/check" "$rootfs/opt/resource/pool"
cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$rootfs/etc/ssl/certs/ca-certificates.crt"
mkdir "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
