# The sidecar's image: built from source on debian:12, shipped as a root filesystem holding only
# the two binaries, the libraries they load, the CA bundle and the help files (about 16 MB).
#   docker build -t sidecar .                       (podman: podman build --format docker -t sidecar .)
#   docker run --rm sidecar --help
# Without a registry, deploy/container/base-image.sh makes debian:12 first (debootstrap).
# Settings come from SIDECAR_* environment variables; certificates from a mounted volume
# (SIDECAR_TLS_CERT=/certs/server.pem, SIDECAR_TLS_KEY=/certs/server.key,
#  SIDECAR_TLS_CLIENT_CA=/certs/ca.pem). Runs as uid 10001 and writes nothing to its root
# filesystem, so --read-only (readOnlyRootFilesystem) works.

FROM debian:12 AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN deploy/install-deps.sh build image && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY . .
# A packager's build: Release, warnings not fatal (CI's own stages make them errors). The unit
# tests run here; the integration tests need Python and run in CI, not in the image build.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
          -DPINGHELP_DEFAULT_HELP_DIR=/usr/share/pinghelp/help \
 && cmake --build /build -j"$(nproc)" --target sidecar pinghelp unit_tests \
 && /build/tests/unit_tests \
 && deploy/container/rootfs.sh /rootfs proto/help /usr/share/pinghelp/help \
      /build/sidecar/sidecar /build/sidecar/pinghelp

FROM scratch
COPY --from=build /rootfs/ /
USER 10001:10001
ENV SIDECAR_LISTEN=0.0.0.0:8443 \
    SIDECAR_ADMIN_LISTEN=0.0.0.0:9990 \
    SIDECAR_UPSTREAM=127.0.0.1:8080 \
    SIDECAR_TLS_CERT=/certs/server.pem \
    SIDECAR_TLS_KEY=/certs/server.key \
    SIDECAR_TLS_CLIENT_CA=/certs/ca.pem
EXPOSE 8443 9990
# `sidecar probe` without a URL asks /health on the admin listener SIDECAR_ADMIN_LISTEN names
# (0.0.0.0 on loopback), so a container given another admin address stays healthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/sidecar", "probe"]
ENTRYPOINT ["/usr/local/bin/sidecar"]
