# The NCCL communicator (comm_nccl.c): device buffers of the CUDA backend,
# bootstrapped and aborted through a host communicator: MPI for several
# ranks; without MPI it is built for one process only (dist.backend: nccl
# over the single-process communicator, which is how a GPU machine without
# MPI still runs it). Built when CRESNET_NCCL and CRESNET_CUDA are enabled.
# Included by the top level after the CUDA backend; sets CRESNET_NCCL_BUILT
# for tests/.
set(CRESNET_NCCL_BUILT OFF)
if(CRESNET_NCCL_ENABLED AND CRESNET_CUDA_ENABLED)
  # NCCL_ROOT (CMake or environment variable), then the toolkit's directory,
  # then the system's (the Debian/Ubuntu libnccl-dev package). PyPI's
  # nvidia-nccl wheels ship only the versioned name.
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
               HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} /usr/local/cuda
               PATH_SUFFIXES lib64 lib)
  if(NOT NCCL_LIBRARY)
    message(FATAL_ERROR "CRESNET_NCCL: nccl.h is in ${NCCL_INCLUDE_DIR} but libnccl was not "
                        "found; set NCCL_ROOT to its install prefix, or CRESNET_NCCL=OFF")
  endif()
  message(STATUS "cresnet: NCCL ${NCCL_LIBRARY}, header in ${NCCL_INCLUDE_DIR}")
  target_sources(cresnet_lib PRIVATE ${CMAKE_CURRENT_LIST_DIR}/comm_nccl.c)
  target_include_directories(cresnet_lib PRIVATE ${NCCL_INCLUDE_DIR})
  target_link_libraries(cresnet_lib PUBLIC ${NCCL_LIBRARY})
  target_compile_definitions(cresnet_lib PUBLIC CRESNET_HAVE_NCCL=1)
  set(CRESNET_NCCL_BUILT ON)
endif()
