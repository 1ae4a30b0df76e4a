# The slurm/ scripts on a private one-node Slurm (slurmctld, slurmd, munge;
# installed with apt-get when missing). Needs root and an MPI build; prints
# "SKIPPED: <reason>" (reported as skipped) where it cannot run.
# Included from tests/CMakeLists.txt.
if(CRESNET_MPI_ENABLED)
  add_test(NAME slurm_scripts
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_slurm.sh $<TARGET_FILE:cresnet>
                   ${CMAKE_SOURCE_DIR} ${CRESNET_TEST_DATA})
  set_tests_properties(slurm_scripts PROPERTIES LABELS slurm TIMEOUT 1500
                       SKIP_REGULAR_EXPRESSION "SKIPPED: ")
endif()
