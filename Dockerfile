# syntax=docker/dockerfile:1
#
# livepg's image: one static Go binary (migrations embedded) on distroless
# static, which holds CA certificates, tzdata and a passwd entry for the
# nonroot user, and no shell and no libc.
#
#   fly deploy --build-arg VERSION=$(git describe --always --dirty)
#
# No Docker engine runs where livepg is developed, so
# cmd/livepg/deploy_test.go reads this file: it builds the binary with the
# flags of the build step below, checks that it is static, and runs it alone
# in an empty root laid out like the final stage. Keep the `go build` on one
# RUN line, flags in double quotes.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ENV CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH}
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/livepg ./cmd/livepg

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/livepg /usr/local/bin/livepg
USER nonroot:nonroot
EXPOSE 8080
# No ENTRYPOINT: fly.toml's release_command ("livepg migrate up") replaces
# CMD, and both find the binary on the image's PATH.
CMD ["livepg", "serve"]
