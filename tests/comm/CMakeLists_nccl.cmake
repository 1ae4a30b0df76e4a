# The NCCL communicator on real GPUs (label gpu), under mpirun (one process
# without MPI). Included by
# tests/CMakeLists.txt when the library has it (CRESNET_NCCL_BUILT). One rank
# per GPU: -np 1 runs on any GPU machine; -np 2 needs two GPUs and is
# skipped with fewer. Without a CUDA device both print "SKIPPED: no CUDA
# device" and exit 0; ctest lists them as skipped.
cresnet_test_program(test_comm_nccl ${CMAKE_CURRENT_LIST_DIR}/test_comm_nccl.c)
if(NOT CRESNET_MPI_ENABLED) # one process, NCCL over the single-process communicator
  add_test(NAME comm_nccl_np1 COMMAND test_comm_nccl)
  set_tests_properties(comm_nccl_np1 PROPERTIES LABELS gpu TIMEOUT 300
                       SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA device")
  return()
endif()
foreach(np 1 2)
  add_test(NAME comm_nccl_np${np}
           COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe -np ${np}
                   $<TARGET_FILE:test_comm_nccl>)
  set_tests_properties(comm_nccl_np${np} PROPERTIES LABELS gpu TIMEOUT 300
                       SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA device")
endforeach()
