# Warnings, warnings-as-errors and sanitizers for every target of the project.
# Applied per target through diablo_target_defaults() so that imported
# libraries (LibTorch, gRPC) are never compiled with our -Werror.

if(CMAKE_CXX_COMPILER_LAUNCHER STREQUAL "")
  find_program(DIABLO_CCACHE ccache)
  if(DIABLO_CCACHE)
    set(CMAKE_CXX_COMPILER_LAUNCHER ${DIABLO_CCACHE})
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${DIABLO_CCACHE})
  endif()
endif()

set(DIABLO_SANITIZE_FLAGS "")
if(DIABLO_SANITIZE STREQUAL "address")
  set(DIABLO_SANITIZE_FLAGS -fsanitize=address -fno-omit-frame-pointer)
elseif(DIABLO_SANITIZE STREQUAL "undefined")
  set(DIABLO_SANITIZE_FLAGS -fsanitize=undefined -fno-sanitize-recover=undefined)
elseif(NOT DIABLO_SANITIZE STREQUAL "")
  message(FATAL_ERROR "DIABLO_SANITIZE must be 'address', 'undefined' or empty, got '${DIABLO_SANITIZE}'")
endif()
if(DIABLO_SANITIZE_FLAGS)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${DIABLO_SANITIZE_FLAGS}>)
  add_link_options(${DIABLO_SANITIZE_FLAGS})
endif()

# Common warning set for our own C++ code.
function(diablo_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
  if(DIABLO_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# libtorch.so exports its own, partly broken copy of std::filesystem (calling
# create_directories or remove_all through it jumps to address 0).  Naming
# libstdc++ first among a binary's shared libraries makes the dynamic linker
# bind those symbols to the real implementation.
add_link_options("LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
