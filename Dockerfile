# Build the manager (and kidsim) as static binaries, then ship them on a
# distroless base as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a code change does not refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
COPY webhookserver/ webhookserver/
# Exactly make build's commands (test/deploy fails when they
# drift), so the image runs the binary the tests ran.
RUN CGO_ENABLED=0 go build -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 go build -o /out/kidsim ./cmd/kidsim

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/manager /out/kidsim /
USER 65532:65532
ENTRYPOINT ["/manager"]
