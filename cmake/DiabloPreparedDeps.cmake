# Dependencies from a prepared folder instead of Debian packages, for a
# compute-plane build on a machine that has LibTorch, nvcc, CMake and ninja
# but nothing else (scripts/gpu-check.sh; docs/gpu-check.md).  The folder is
# written by `scripts/gpu-check.sh --prepare DIR` on a machine that has the
# packages: DIR/deps/prefix holds the header-only libraries (nlohmann-json,
# CLI11, the gloo headers) with their CMake package files, DIR/deps/googletest
# the GoogleTest sources, built here when no installed GTest is found.
# Included only when DIABLO_PREPARED_DEPS is set; a normal build never is.

if(NOT EXISTS "${DIABLO_PREPARED_DEPS}/prepared-deps.txt")
  message(FATAL_ERROR
    "DIABLO_PREPARED_DEPS=${DIABLO_PREPARED_DEPS} is not a folder written by "
    "`scripts/gpu-check.sh --prepare DIR` (no prepared-deps.txt in it): run that on a machine "
    "with the Debian packages (scripts/debian-packages.txt) and pass DIR/deps")
endif()

# Searched before the system, so a half-installed system package cannot shadow
# the prepared copy; LibTorch still comes from the caller's CMAKE_PREFIX_PATH.
list(PREPEND CMAKE_PREFIX_PATH "${DIABLO_PREPARED_DEPS}/prefix")

# tests/CMakeLists.txt builds GoogleTest from these sources when
# find_package(GTest) finds no installed copy.
if(EXISTS "${DIABLO_PREPARED_DEPS}/googletest/CMakeLists.txt")
  set(DIABLO_GTEST_SOURCE_DIR "${DIABLO_PREPARED_DEPS}/googletest")
endif()
message(STATUS "DiaBlo prepared dependencies: ${DIABLO_PREPARED_DEPS}")
