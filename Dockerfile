# syntax=docker/dockerfile:1
#
# bg-worker: a static Go binary (CGO_ENABLED=0) on distroless/static, running as nonroot.
#
#   docker build -t bg-worker:local .
#   docker run --rm bg-worker:local jobs
#
# docker compose builds it for you: docker compose up --build --scale bg-worker=3
# internal/deploy/dockerfile_test.go checks this file and runs its `go build` line.

# Keep in step with the go directive of go.mod (the test checks).
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first: this layer is reused until go.mod or go.sum change, and the module cache
# mount survives across builds.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
# The release Sentry reports (bg-worker@VERSION): `docker build --build-arg VERSION=v1.2.3`.
ARG VERSION=devel
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/bg-worker/bg-worker/internal/config.Version=${VERSION}" -o /out/bg-worker ./cmd/bg-worker

# No shell, no package manager, CA certificates and tzdata included; uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bg-worker /bg-worker
USER nonroot:nonroot
# HTTP_ADDR: /healthz, /readyz, /metrics.
ENV HTTP_ADDR=:8081
EXPOSE 8081
# No curl in a distroless image: the binary checks itself (GET /healthz on HTTP_ADDR).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/bg-worker", "healthcheck"]
ENTRYPOINT ["/bg-worker"]
CMD ["run"]
