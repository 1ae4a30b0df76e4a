# The NCCL communicator (comm_nccl.c): device buffers of the CUDA backend,
# bootstrapped and aborted through the MPI communicator, hence built only
# when CRESNET_NCCL, CRESNET_CUDA and CRESNET_MPI are all enabled. Included
# by the top level after the CUDA backend; sets CRESNET_NCCL_BUILT for
# tests/.
set(CRESNET_NCCL_BUILT OFF)
if(CRESNET_NCCL_ENABLED AND CRESNET_CUDA_ENABLED AND NOT CRESNET_MPI_ENABLED)
  if(CRESNET_NCCL STREQUAL "ON")
    message(FATAL_ERROR "CRESNET_NCCL=ON needs MPI (CRESNET_MPI) for NCCL's bootstrap")
  endif()
  message(STATUS "cresnet: NCCL communicator not built: it needs MPI for its bootstrap")
endif()

if(CRESNET_NCCL_ENABLED AND CRESNET_CUDA_ENABLED AND CRESNET_MPI_ENABLED)
  # NCCL_ROOT (CMake or environment variable), then the toolkit's directory,
  # then the system's (the Debian/Ubuntu libnccl-dev package).
  find_library(NCCL_LIBRARY nccl
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
