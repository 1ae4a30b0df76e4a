/* What the fuzz targets share: fatal errors as returns, inputs as files.
 *
 * cresnet's loaders end the process on bad input (cr_fatal, SPEC's exit
 * codes); a fuzz target must return instead. fuzz_run installs an abort hook
 * that longjmps back, and then releases what the cut-short call still held:
 * the stdio files it opened (fopen and fclose are wrapped at link time,
 * -Wl,--wrap) and, in sanitizer builds, the heap blocks it allocated (an
 * allocator hook records them). Leaks on the paths that return normally stay
 * visible to LeakSanitizer.
 * Each target is built twice: with libFuzzer (CRESNET_FUZZ) and with
 * replay_main.c, which feeds it the files of its corpus as a unit test. */
#ifndef CRESNET_FUZZ_SUPPORT_H
#define CRESNET_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs body(context). Returns 0 if it returned (a file it opened and left
 * open is a failure), or the exit code it gave cr_fatal, having closed its
 * files and freed its allocations. */
int fuzz_run(void (*body)(void *context), void *context);

/* A private folder for the target's files (on tmpfs where there is one),
 * removed at exit. */
const char *fuzz_dir(void);
/* Writes bytes to fuzz_dir()/name, replacing it; returns path, where its
 * full path was written. */
const char *fuzz_write_file(const char *name, const void *data, size_t size, char *path,
                            size_t path_len);

/* Reports a broken invariant as a crash (abort) with a message. */
_Noreturn void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
