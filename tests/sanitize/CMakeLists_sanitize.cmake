# The sanitizer build (CRESNET_SANITIZE=ON; scripts/test.sh makes it in
# build-asan and runs `ctest -L 'unit|golden|mpi|sanitize'` there): the
# run-time options every test runs with, and a short training run under
# LeakSanitizer. Included from tests/CMakeLists.txt.
#
# ASan reports and UBSan's findings (-fno-sanitize-recover) end the process
# with a non-zero exit, so a test fails on any report. fast_unwind_on_malloc=0
# records whole allocation stacks, which lsan.supp needs to recognise Open
# MPI's allocations (made from components it unloads before exit).
if(CRESNET_SANITIZE)
  set(CRESNET_SANITIZER_ENV
      "ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
      "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_LIST_DIR}/lsan.supp:print_suppressions=0"
      "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")

  add_test(NAME asan_train_short
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/train_short.sh $<TARGET_FILE:cresnet>
                   ${CMAKE_SOURCE_DIR} ${CRESNET_TEST_DATA})
  set_tests_properties(asan_train_short PROPERTIES LABELS sanitize TIMEOUT 900)

  # At the end of tests/, so tests added after this file is included get the
  # options too.
  function(cresnet_sanitizer_environment)
    get_property(all_tests DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} PROPERTY TESTS)
    foreach(t IN LISTS all_tests)
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT ${CRESNET_SANITIZER_ENV})
    endforeach()
  endfunction()
  cmake_language(DEFER CALL cresnet_sanitizer_environment)
endif()
