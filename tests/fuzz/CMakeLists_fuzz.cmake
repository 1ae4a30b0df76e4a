# Fuzz targets, tests/fuzz/fuzz_NAME.c for NAME in config, safetensors, cifar.
# Every build makes fuzz_replay_NAME (the target with replay_main.c), which
# replays the committed corpus tests/fuzz/corpus/NAME/ as a unit test.
# With CRESNET_FUZZ=ON (clang) also fuzz_NAME, the libFuzzer binary:
#   CC=clang cmake -S . -B build-fuzz -DCRESNET_FUZZ=ON -DCRESNET_CUDA=OFF
#   cmake --build build-fuzz --target fuzz_config
#   build-fuzz/tests/fuzz_config -max_total_time=600 NEW_CORPUS tests/fuzz/corpus/config
# (tests/fuzz/README.md). Included from tests/CMakeLists.txt.
set(fuzz_dir ${CMAKE_CURRENT_LIST_DIR})
foreach(name config safetensors cifar)
  set(programs fuzz_replay_${name})
  add_executable(fuzz_replay_${name} ${fuzz_dir}/fuzz_${name}.c ${fuzz_dir}/fuzz_support.c
                                     ${fuzz_dir}/replay_main.c)
  add_test(NAME fuzz_replay_${name}
           COMMAND fuzz_replay_${name} ${fuzz_dir}/corpus/${name})
  set_tests_properties(fuzz_replay_${name} PROPERTIES LABELS unit)
  if(CRESNET_FUZZ)
    add_executable(fuzz_${name} ${fuzz_dir}/fuzz_${name}.c ${fuzz_dir}/fuzz_support.c)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    list(APPEND programs fuzz_${name})
  endif()
  foreach(program IN LISTS programs)
    target_link_libraries(${program} PRIVATE cresnet_lib)
    # fuzz_support.c closes the files a failing call leaves open.
    target_link_options(${program} PRIVATE -Wl,--wrap=fopen,--wrap=fclose)
  endforeach()
endforeach()
