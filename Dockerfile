# syntax=docker/dockerfile:1
#
# The image Concourse workers pull: /opt/resource/{check,in,out,pool} as static
# musl binaries (libgit2, libssh2 and OpenSSL built in), CA certificates, and
# nothing else: no shell, no git, no package manager.
#
#   docker build -t pool-resource .                                    # the image
#   docker build --target tests .                                      # run the test suite
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .    # both architectures
#
# The final stage copies its files from the stage named by BINARIES_FROM.
# `builder` (the default) compiles them from this repository. `prebuilt` takes
# them from a build context that holds `rootfs/`: ci/build-and-test-image.sh
# builds this very file that way, offline, with only `FROM scratch` to
# resolve. Both routes compile and lay out the files with the same script,
# ci/build-rootfs.sh, so they cannot drift apart.

ARG RUST_VERSION=1.95
ARG BINARIES_FROM=builder

# The Rust toolchain, musl, and what the test suite runs (git, sshd).
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS toolchain
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      binutils ca-certificates git make musl-tools openssh-client openssh-server perl \
 && rm -rf /var/lib/apt/lists/*
# Docker names architectures (TARGETARCH), Rust names target triples.
RUN case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}: add its musl target triple here" >&2; exit 1 ;; \
    esac \
 && echo "$triple" > /rust-target \
 && rustup target add "$triple"

# Size over speed: the resource waits on networks, not on the CPU, and "z"
# makes each binary about a quarter smaller (and builds in half the time).
# ci/build-and-test-image.sh applies every `ENV CARGO_*` line of this file.
ENV CARGO_PROFILE_RELEASE_OPT_LEVEL=z

# Static release binaries, laid out as the final image's root filesystem.
FROM toolchain AS builder
WORKDIR /src
COPY . .
RUN sh ci/build-rootfs.sh "$(cat /rust-target)" /rootfs

# `--target tests`: the whole suite against the binaries just built, as the
# Go resource's Dockerfile does. The image tests are left out: they build
# this file with buildah and cannot run inside a build.
FROM builder AS tests
RUN cargo test --locked --release --features vendored --target "$(cat /rust-target)" \
      -- --skip image::

# Binaries compiled outside this file (see the header).
FROM scratch AS prebuilt
LABEL org.pool-resource.stage=prebuilt
COPY rootfs/ /rootfs/

FROM ${BINARIES_FROM} AS binaries

FROM scratch AS final
ARG VERSION=dev
ARG REVISION=unknown
COPY --from=binaries /rootfs/ /
LABEL org.opencontainers.image.title="pool-resource" \
      org.opencontainers.image.description="Concourse resource for a pool of locks kept in a Git repository (drop-in for concourse/pool-resource)" \
      org.opencontainers.image.source="https://github.com/pool-resource/pool-resource" \
      org.opencontainers.image.url="https://github.com/pool-resource/pool-resource" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
