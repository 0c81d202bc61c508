# syntax=docker/dockerfile:1
# The Tessera core: `docker build -t tessera .` (from the repository root).
# Build stage: the release binary. Runtime: distroless (glibc, CA certificates, no shell),
# non-root, with a HEALTHCHECK through the binary itself (`tessera health`).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tessera-core --bin tessera \
 && mkdir -p /out/data \
 && cp target/release/tessera /out/tessera

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="Tessera core: control plane for out-of-process plugin microservices" \
      org.opencontainers.image.source="https://github.com/tessera-dev/tessera" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tessera /usr/local/bin/tessera
# The SQLite data dir (unused with --store kubernetes, where the root filesystem can be read-only).
COPY --from=build --chown=65532:65532 /out/data /var/lib/tessera
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/tessera", "health", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/tessera"]
