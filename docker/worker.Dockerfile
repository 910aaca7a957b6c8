# syntax=docker/dockerfile:1
# image: diablo/worker
#
# A GPU node: the agent diablo-worker and the trainer `diablo` it starts (one
# per rank), with LibTorch, cuDNN and NCCL.  Build from the repository root;
# the tag is the project version of CMakeLists.txt (docs/deployment.md):
#
#   docker build -f docker/worker.Dockerfile -t diablo/worker:0.1.0 .
#
# Build context: docker/worker.Dockerfile.dockerignore.
#
# ---- Why CUDA 13.0 on Ubuntu 24.04 ----------------------------------------
# * The torch wheel pinned in scripts/requirements-test.txt (2.11.0) is, on
#   PyPI, built for CUDA 13.0 (cu130) and brings its own CUDA libraries,
#   cuDNN and NCCL as nvidia-* wheels, found through LibTorch's RPATH.  Our
#   CUDA kernels (kernels/cuda) must be compiled by an nvcc of the same major
#   version and link libcudart.so.13, so the base images are CUDA 13.0.
# * Ubuntu 24.04, not 22.04: the agent links gRPC 1.51 / Protobuf 3.21 /
#   Abseil 20220623, the versions of Debian 12 (where the project is
#   developed); 24.04 ships the same ones, 22.04 much older ones (gRPC 1.30)
#   and an older glibc.  Both stages use the same Ubuntu release, so the
#   libraries the build links are the ones the runtime installs.
# * The runtime base is `-base-` (libcudart, the CUDA compat package and the
#   NVIDIA container environment), not `-cudnn-runtime-`: cuDNN, cuBLAS, NCCL
#   etc. come from the wheel, exactly the builds LibTorch was linked against;
#   the cudnn-runtime image would add ~3 GB of second copies nobody loads.
# The host needs an NVIDIA driver for CUDA 13.0 (>= 580) and the NVIDIA
# Container Toolkit (Docker: --gpus / compose `devices`; Kubernetes: the
# device plugin or GPU Operator).

ARG TORCH_CUDA=cu130

# ============================================================================
FROM nvidia/cuda:13.0.2-devel-ubuntu24.04 AS build
# A failing command anywhere in a pipeline fails the step.
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]

# scripts/debian-packages.txt minus what only tests and fuzzing need
# (GoogleTest, benchmark, clang, ccache, git), by the same names on Ubuntu
# 24.04.  The whole tree is configured (the agent is control plane, the
# trainer compute plane), so the control-plane packages are here too.
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libabsl-dev \
      libsqlite3-dev prometheus-cpp-dev libcurl4-openssl-dev libssl-dev \
      libcli11-dev nlohmann-json3-dev libyaml-cpp-dev libgloo-dev libsentencepiece-dev \
      python3-venv \
 && rm -rf /var/lib/apt/lists/*

# LibTorch from the torch wheel, as scripts/setup.sh does, in a venv whose
# path is the same in the runtime stage: the binaries' RUNPATH names
# <venv>/lib/python3.X/site-packages/torch/lib.
# TORCH_CUDA names the CUDA build the wheel must be (cu130 = CUDA 13.0, the
# version of the base images); the build stops if PyPI serves another one.
ARG TORCH_VERSION=2.11.0
ARG TORCH_CUDA
RUN python3 -m venv /opt/diablo/venv \
 && /opt/diablo/venv/bin/pip install --no-cache-dir --disable-pip-version-check "torch==${TORCH_VERSION}" \
 && /opt/diablo/venv/bin/python -c 'import sys, torch; got = "cu" + (torch.version.cuda or "").replace(".", ""); sys.exit(0 if got == sys.argv[1] else "torch %s is built for %s, the base images for %s" % (torch.__version__, got, sys.argv[1]))' "${TORCH_CUDA}"

WORKDIR /src
# Every directory CMakeLists.txt adds (tests/ and bench/ are switched off).
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

# CUDA kernels for sm_80 and sm_90 plus PTX (the project's default), NCCL
# headers from the wheel's NCCL (the library LibTorch loads).  BUILD_JOBS
# limits the parallel compiles: LibTorch translation units take 2-3 GB each.
# Building `diablo` builds its SentencePiece plugin, diablo_sentencepiece.so.
ARG BUILD_JOBS=
ARG CUDA_ARCHITECTURES="80-real;90-real;90-virtual"
RUN site="$(/opt/diablo/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && cmake -S . -B build -G Ninja \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$(/opt/diablo/venv/bin/python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
      -DDIABLO_NCCL_INCLUDE_DIR="${site}/nvidia/nccl/include" \
      -DDIABLO_BUILD_TESTS=OFF -DDIABLO_BUILD_BENCH=OFF \
 && cmake --build build --parallel ${BUILD_JOBS:-$(nproc)} --target diablo diablo-worker \
 && strip build/bin/diablo build/bin/diablo-worker build/bin/diablo_sentencepiece.so

# Stage what the runtime needs under /stage: the two binaries and the
# SentencePiece plugin `diablo` loads from its own folder (text/CMakeLists.txt),
# LibTorch's libraries and the nvidia-* wheels (same absolute paths), and the
# Ubuntu packages that own the other shared libraries they load (gRPC,
# Protobuf, Abseil, yaml-cpp, sentencepiece, libcurl ...), found with ldd +
# dpkg so that the list cannot drift from what was linked.  Libraries under
# /opt (the wheel, copied) and /usr/local (CUDA, in the runtime base image)
# are skipped; any other library no package owns fails the build.
RUN site="$(/opt/diablo/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && mkdir -p /stage/opt/diablo/bin "/stage${site}/torch" \
 && cp build/bin/diablo build/bin/diablo-worker build/bin/diablo_sentencepiece.so /stage/opt/diablo/bin/ \
 && cp -a "${site}/torch/lib" "/stage${site}/torch/lib" \
 && cp -a "${site}/nvidia" "/stage${site}/nvidia" \
 && ldd build/bin/diablo build/bin/diablo-worker build/bin/diablo_sentencepiece.so | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
    | while read -r lib; do \
        real="$(readlink -f "$lib")"; \
        case "$real" in /opt/*|/usr/local/*) continue ;; esac; \
        dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}"; \
      done \
    | cut -d: -f1 | tr ',' '\n' | sed 's/ //g' | sort -u > /stage/runtime-packages.txt \
 && cat /stage/runtime-packages.txt \
 && if ldd build/bin/diablo build/bin/diablo-worker build/bin/diablo_sentencepiece.so | grep 'not found'; then exit 1; fi

# ============================================================================
FROM nvidia/cuda:13.0.2-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /stage/runtime-packages.txt /tmp/runtime-packages.txt
# tini: PID 1 that forwards SIGTERM to the agent and reaps orphans of the
# trainers; ca-certificates for https S3 endpoints.
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt

RUN groupadd --system --gid 10001 diablo \
 && useradd --system --uid 10001 --gid diablo --home-dir /var/lib/diablo-worker --shell /usr/sbin/nologin diablo \
 && install -d -o diablo -g diablo -m 0750 /var/lib/diablo-worker \
 && install -d -o diablo -g diablo -m 0700 /var/lib/diablo-tokens

COPY --from=build /stage/opt/diablo /opt/diablo

ENV PATH=/opt/diablo/bin:${PATH} \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER diablo:diablo
WORKDIR /var/lib/diablo-worker
# Job directories and the input cache (<work-dir>/cache, keyed by SHA-256):
# keep it on a large local disk.
VOLUME ["/var/lib/diablo-worker"]

# The trainer loads LibTorch, the CUDA runtime and the driver and counts the
# GPUs it sees: a broken driver mount or library turns the container
# unhealthy.  (The agent itself is PID 1's only child: if it dies, the
# container stops.)  Loading LibTorch costs a few seconds, hence the long
# interval.
HEALTHCHECK --interval=5m --timeout=60s --start-period=2m --retries=2 \
  CMD ["diablo", "version"]

STOPSIGNAL SIGTERM
# The scheduler address and the worker token come from DIABLO_SERVER and
# DIABLO_TOKEN (never a --token flag: it would show in `ps`).  The node's
# GPUs, the memory of one GPU and the address other nodes of a gang reach come
# from DIABLO_DEVICES (default 1 here), DIABLO_MEMORY_GIB (required: the
# worker refuses to guess GPU memory) and DIABLO_WORKER_HOST, or from flags
# appended to the command.
ENV DIABLO_DEVICES=1
ENTRYPOINT ["/usr/bin/tini", "--", "diablo-worker", "--work-dir", "/var/lib/diablo-worker"]
