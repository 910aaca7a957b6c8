# CUDA is optional: when nvcc is found (and DIABLO_CUDA is on) kernels/ builds
# its .cu files for sm_80 and sm_90 plus PTX for newer GPUs; otherwise the CPU
# path alone is built.  Either way the same targets and tests exist.
set(DIABLO_HAVE_CUDA OFF)
if(DIABLO_CUDA)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80-real 90-real 90-virtual)
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    find_package(CUDAToolkit REQUIRED)
    set(DIABLO_HAVE_CUDA ON)
  endif()
endif()
# A CUDA build of LibTorch probes the local GPU for its own arch list unless
# told (also when our kernels are off); the machine may have no GPU, so name
# the same architectures as ours.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;9.0+PTX")
endif()
message(STATUS "DiaBlo CUDA kernels: ${DIABLO_HAVE_CUDA}")
