# syntax=docker/dockerfile:1
# image: diablo/scheduler
#
# The control plane: diablo-scheduler (gRPC API, SQLite store, /metrics) and
# diablo-ctl (used by the HEALTHCHECK and for `docker exec ... diablo-ctl`).
# No LibTorch, no CUDA in the image.  Build from the repository root; the tag
# is the project version of CMakeLists.txt (docs/deployment.md, "Images"):
#
#   docker build -f docker/scheduler.Dockerfile -t diablo/scheduler:0.1.0 .
#
# Build context: docker/scheduler.Dockerfile.dockerignore (BuildKit reads the
# ignore file named after the Dockerfile; a docker/.dockerignore would not be
# used with the repository root as context).
#
# ---- No LibTorch --------------------------------------------------------------
# -DDIABLO_CONTROL_ONLY=ON configures and builds the control plane alone: the
# scheduler, the worker agent and diablo-ctl link gRPC, SQLite and friends,
# and CMake never looks for LibTorch.

# ============================================================================
FROM debian:12 AS build

# Control-plane subset of scripts/debian-packages.txt: compiler and build
# tools, gRPC/Protobuf/Abseil, SQLite, prometheus-cpp, libcurl/OpenSSL (S3),
# CLI11, nlohmann-json, yaml-cpp (diablo-ctl and the scheduler read YAML job
# files through the trainer's config parser).  Not needed here: ccache, git (the
# commit in `--version` reads "unknown" because .git is not in the build
# context), clang (fuzzing), GoogleTest/benchmark (tests and benchmarks are
# off), gloo/sentencepiece (compute plane only).
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libabsl-dev \
      libsqlite3-dev prometheus-cpp-dev libcurl4-openssl-dev libssl-dev \
      libcli11-dev nlohmann-json3-dev libyaml-cpp-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The directories CMakeLists.txt names (tests/ and bench/ are switched off;
# kernels/ is named though a control-plane-only build skips it).
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY kernels/ kernels/
COPY spec/ spec/
COPY formats/ formats/
COPY text/ text/
COPY worker/ worker/
COPY common/ common/
COPY proto/ proto/
COPY server/ server/
COPY client/ client/

ARG BUILD_JOBS=
RUN cmake -S . -B build -G Ninja \
      -DCMAKE_BUILD_TYPE=Release \
      -DDIABLO_CONTROL_ONLY=ON -DDIABLO_BUILD_TESTS=OFF -DDIABLO_BUILD_BENCH=OFF -DDIABLO_CUDA=OFF \
 && cmake --build build --parallel ${BUILD_JOBS:-$(nproc)} --target diablo-scheduler diablo-ctl \
 && strip build/bin/diablo-scheduler build/bin/diablo-ctl

# ============================================================================
FROM debian:12-slim

# Runtime libraries of the two binaries (their NEEDED entries, by Debian 12
# package; tests/deploy/test_manifests.py checks the list against the built
# binaries), CA certificates for https S3 endpoints, and the sqlite3 shell
# for online backups (`sqlite3 /var/lib/diablo/scheduler.db ".backup ..."`).
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 \
      libsqlite3-0 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libcurl4 libssl3 libyaml-cpp0.7 \
      ca-certificates sqlite3 \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid (10001) so volumes, Kubernetes fsGroup and the worker image
# agree on ownership.
RUN groupadd --system --gid 10001 diablo \
 && useradd --system --uid 10001 --gid diablo --home-dir /var/lib/diablo --shell /usr/sbin/nologin diablo \
 && install -d -o diablo -g diablo -m 0750 /var/lib/diablo \
 && install -d -o diablo -g diablo -m 0700 /var/lib/diablo-tokens

COPY --from=build /src/build/bin/diablo-scheduler /src/build/bin/diablo-ctl /usr/local/bin/

USER diablo:diablo
WORKDIR /var/lib/diablo
# scheduler.db (+ -wal, -shm) and, with the default file:// storage, the
# objects.  docker/compose.yaml uses s3:// (MinIO) instead.
VOLUME ["/var/lib/diablo"]

# gRPC API (diablo.v1, grpc.health.v1, reflection) and Prometheus /metrics.
EXPOSE 50051 9464

# SystemService.GetVersion needs no token (docs/service.md); diablo-ctl exits
# 1 when the server cannot be reached or refuses.  No --server: the default
# is 127.0.0.1:50051, and DIABLO_SERVER or DIABLO_CONFIG (a ctl.toml with
# tls-ca = "...", for a TLS scheduler) change it without rebuilding.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["diablo-ctl", "--timeout", "5", "version"]

STOPSIGNAL SIGTERM
# --data-dir is part of the entrypoint so that `docker run IMAGE token create
# --tenant T` manages the tokens of the same store.  The CMD is the serving
# configuration; replace it to add --storage, TLS, limits.
ENTRYPOINT ["diablo-scheduler", "--data-dir", "/var/lib/diablo"]
CMD ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
