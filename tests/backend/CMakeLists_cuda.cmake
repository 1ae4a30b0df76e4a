# The CUDA backend against the CPU backend, op by op and one training step
# (label gpu). Included by tests/CMakeLists.txt when CRESNET_CUDA is enabled.
# Without a CUDA device the test prints "SKIPPED: no CUDA device" and exits 0;
# ctest then lists it as skipped, which does not fail the run.
cresnet_test(test_cuda_ops ${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops.c gpu)
set_tests_properties(test_cuda_ops PROPERTIES SKIP_REGULAR_EXPRESSION "SKIPPED: no CUDA device"
                                              TIMEOUT 600)
