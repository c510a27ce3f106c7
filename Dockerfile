# Multi-stage image: build with the same package list and scripts as CI, ship only what runs.
#   docker build -t sidecar .
#   docker run --rm sidecar --help
# Settings come from SIDECAR_* environment variables; certificates from a mounted volume
# (SIDECAR_TLS_CERT=/certs/server.pem, SIDECAR_TLS_KEY=/certs/server.key,
#  SIDECAR_TLS_CLIENT_CA=/certs/ca.pem).

FROM debian:12 AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN deploy/install-deps.sh build
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_WERROR=ON \
          -DPINGHELP_DEFAULT_HELP_DIR=/usr/share/pinghelp/help \
 && cmake --build /build -j"$(nproc)" --target sidecar pinghelp unit_tests \
 && /build/tests/unit_tests \
 && strip /build/sidecar/sidecar /build/sidecar/pinghelp

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
      libboost-json1.81.0 libboost-program-options1.81.0 libzookeeper-mt2 \
      libprometheus-cpp-core1.0 libspdlog1.10 libfmt9 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar
COPY --from=build /build/sidecar/sidecar /build/sidecar/pinghelp /usr/local/bin/
COPY proto/help/ /usr/share/pinghelp/help/
USER 10001
ENV SIDECAR_LISTEN=0.0.0.0:8443 \
    SIDECAR_ADMIN_LISTEN=0.0.0.0:9990 \
    SIDECAR_UPSTREAM=127.0.0.1:8080 \
    SIDECAR_TLS_CERT=/certs/server.pem \
    SIDECAR_TLS_KEY=/certs/server.key \
    SIDECAR_TLS_CLIENT_CA=/certs/ca.pem
EXPOSE 8443 9990
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9990/health || exit 1
ENTRYPOINT ["/usr/local/bin/sidecar"]
