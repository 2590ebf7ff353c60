# syntax=docker/dockerfile:1
# The manager alone (kidsim and kubectl-kid are tools for a developer's or an
# operator's machine, not for the cluster), static, on no base image at all:
# the final stage is FROM scratch plus the few files hack/image ships too
# (/etc/passwd and /etc/group naming user 65532, Debian's CA bundle, /tmp).
# `make image` builds the same image without a container engine, and
# test/deploy checks that the two agree.
#
# The builder is pinned by digest, which this file cannot know ahead of a
# registry: GOLANG_IMAGE must name one, and the build stops at once if it
# does not. make docker-build resolves it (crane digest) and passes it;
# by hand:
#   digest=$(go run github.com/google/go-containerregistry/cmd/crane@v0.22.1 digest golang:1.26.8)
#   docker build --build-arg GOLANG_IMAGE=golang:1.26.8@$digest \
#     --build-arg VERSION=$(git describe --tags --dirty) --build-arg REVISION=$(git rev-parse HEAD) .
# Use the Go version `go version` prints where make image runs: the same Go,
# the same sources and flags build the same manager, byte for byte.
ARG GOLANG_IMAGE=golang:1.26.8

# The builder runs on the build machine's platform and cross-compiles for
# TARGETOS/TARGETARCH (docker buildx build --platform linux/arm64,...).
FROM --platform=$BUILDPLATFORM ${GOLANG_IMAGE} AS build
ARG GOLANG_IMAGE
RUN case "$GOLANG_IMAGE" in *@sha256:*) ;; *) \
      echo "GOLANG_IMAGE=$GOLANG_IMAGE is not pinned by digest: pass --build-arg GOLANG_IMAGE=<image>@sha256:<digest> (see the top of the Dockerfile), or use make docker-build" >&2; exit 1;; \
    esac
WORKDIR /src
# Modules first, so that a code change does not refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY webhookserver/ webhookserver/
# What the binary reports (--version, kid_build_info) and the labels: the
# .git facts, which the build context leaves out (.dockerignore), passed in.
ARG VERSION=unknown
ARG REVISION=unknown
ARG TARGETOS
ARG TARGETARCH
ENV GOOS=$TARGETOS GOARCH=$TARGETARCH
# Exactly make build's command (test/deploy fails when they drift), so the
# image runs the binary the tests ran.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/kid-operator/kid-operator/internal/version.version=${VERSION} -X github.com/kid-operator/kid-operator/internal/version.revision=${REVISION}" -o /out/manager ./cmd/manager
# The base's files, as hack/image writes them.
COPY hack/image/rootfs/etc/passwd hack/image/rootfs/etc/group /rootfs/etc/
RUN mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp && chmod 1777 /rootfs/tmp && \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/

FROM scratch
ARG VERSION=unknown
ARG REVISION=unknown
COPY --from=build /rootfs/ /
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
LABEL org.opencontainers.image.title="kid-operator" \
      org.opencontainers.image.description="Receives k-ID's signed webhooks into Kubernetes and runs the controllers (the manager alone)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/kid-operator/kid-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
