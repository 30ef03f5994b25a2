# herald's container image (README.md#packaging): `docker build -t herald .`
#
# The `build` stage compiles herald; the `runtime` stage is Debian slim with the binary, a
# non-root user and the state in a volume. To package a binary built elsewhere instead (for the
# same Debian release), replace the `build` stage with a directory holding it as `herald`:
#   docker buildx build --build-context build=DIR .
# which is what packaging/test-container does, with podman.
#
# The image listens on 0.0.0.0:3000, so herald starts only with auth configured:
#   docker run -e HERALD_JWT_SECRET=... -e HERALD_PUBLISH_KEY=... -p 3000:3000 herald
# (or a mounted configuration file named by HERALD_CONFIG); to try it without auth,
# -e HERALD_ALLOW_ANONYMOUS=true.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target/ are cache mounts: a rebuild compiles only what changed. The image's
# binary keeps its symbols (function names in a panic's backtrace) but not the line tables.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin herald \
    && objcopy --strip-debug target/release/herald /herald

FROM debian:bookworm-slim AS runtime
# ca-certificates: Web Push reaches the push services over HTTPS. A fixed uid/gid, so that a
# volume's owner means the same in every container, and numeric for runAsNonRoot checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 herald \
    && useradd --uid 10001 --gid herald --no-log-init --home-dir /var/lib/herald --no-create-home \
        --shell /usr/sbin/nologin herald \
    && install -d -o herald -g herald -m 0750 /var/lib/herald
COPY --from=build /herald /usr/local/bin/herald
USER 10001:10001
WORKDIR /var/lib/herald
# herald reads every setting from HERALD_<FLAG> (README.md#running-it).
ENV HERALD_LISTEN=0.0.0.0:3000 \
    HERALD_DATA_DIR=/var/lib/herald
VOLUME /var/lib/herald
EXPOSE 3000
# `herald healthcheck` asks http://127.0.0.1:3000/readyz (HERALD_SERVER to change it): 503 while
# draining or when the store fails.
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s --retries=3 CMD ["herald", "healthcheck"]
# herald drains within --shutdown-timeout (10 s) and exits 0: give `docker stop` more (-t 15).
STOPSIGNAL SIGTERM
ENTRYPOINT ["herald"]
CMD ["serve"]
