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
# ---- LibTorch at configure time -------------------------------------------
# CMakeLists.txt calls find_package(Torch REQUIRED) unconditionally: the only
# plane switch is DIABLO_ENGINE_ONLY (compute plane alone); there is no
# control-plane-only one.  Building just the targets diablo-scheduler and
# diablo-ctl links no LibTorch, but *configuring* still needs one.  So the
# build stage installs the CPU-only torch wheel (the version pinned in
# scripts/requirements-test.txt, ~200 MB instead of several GB, and unlike
# the CUDA wheel its CMake config does not demand a CUDA toolkit) into
# /opt/libtorch with --no-deps, points CMAKE_PREFIX_PATH at it, and throws it
# away with the stage.  Nothing of it reaches the runtime image.  Consequence:
# the control-plane image build downloads a LibTorch it never uses and needs
# python3-venv; once CMake guards find_package(Torch) for control-plane-only
# builds, delete the two torch lines below and python3-venv.

# ============================================================================
FROM debian:12 AS build

# Control-plane subset of scripts/debian-packages.txt: compiler and build
# tools, gRPC/Protobuf/Abseil, SQLite, prometheus-cpp, libcurl/OpenSSL (S3),
# CLI11, nlohmann-json, yaml-cpp (diablo-ctl and the scheduler read YAML job
# files through the trainer's config parser).  python3-venv only for the
# configure-time LibTorch (see above).  Not needed here: ccache, git (the
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
      python3-venv \
 && rm -rf /var/lib/apt/lists/*

# Configure-time LibTorch only (see the header): CPU wheel, no dependencies.
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python3 -m venv /opt/pip \
 && /opt/pip/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      --index-url "${TORCH_INDEX_URL}" --target /opt/libtorch "torch==${TORCH_VERSION}"

WORKDIR /src
# Every directory CMakeLists.txt adds (tests/ and bench/ are switched off).
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY kernels/ kernels/
COPY worker/ worker/
COPY common/ common/
COPY proto/ proto/
COPY server/ server/
COPY client/ client/

ARG BUILD_JOBS=
RUN cmake -S . -B build -G Ninja \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH=/opt/libtorch/torch/share/cmake \
      -DDIABLO_BUILD_TESTS=OFF -DDIABLO_BUILD_BENCH=OFF -DDIABLO_CUDA=OFF \
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
