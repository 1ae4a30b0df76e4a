/* See fuzz_support.h. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include "fuzz_support.h"

#include "cresnet/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_TRACK_HEAP 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_TRACK_HEAP 1
#endif

#ifdef FUZZ_TRACK_HEAP
#include <sanitizer/allocator_interface.h>
#endif

_Noreturn void fuzz_fail(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "fuzz: ");
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}

/* ------------------------------------------------------------------------
 * What a call holds while it runs: its stdio files, its heap blocks. Only
 * the thread inside fuzz_run is tracked. */

static _Thread_local int tracking;

enum { MAX_FILES = 64 };
static FILE *open_files[MAX_FILES];
static int num_open_files;

FILE *__real_fopen(const char *path, const char *mode);
int __real_fclose(FILE *f);

FILE *__wrap_fopen(const char *path, const char *mode) {
    FILE *f = __real_fopen(path, mode);
    if (f && tracking) {
        if (num_open_files == MAX_FILES) fuzz_fail("more than %d files open at once", MAX_FILES);
        open_files[num_open_files++] = f;
    }
    return f;
}

int __wrap_fclose(FILE *f) {
    for (int i = 0; i < num_open_files; i++)
        if (open_files[i] == f) {
            open_files[i] = open_files[--num_open_files];
            break;
        }
    return __real_fclose(f);
}

#ifdef FUZZ_TRACK_HEAP
/* Every block allocated during the call, in order; a block freed (and even
 * one reallocated at the same address) is told apart at release time by
 * asking the allocator whether the address is a live block. */
enum { MAX_BLOCKS = 1 << 20 };
static const volatile void *blocks[MAX_BLOCKS];
static size_t num_blocks;
static int blocks_overflowed;

static void on_malloc(const volatile void *p, size_t size) {
    (void)size;
    if (!tracking) return;
    if (num_blocks == MAX_BLOCKS) {
        blocks_overflowed = 1;
        return;
    }
    blocks[num_blocks++] = p;
}

static void on_free(const volatile void *p) { (void)p; }
#endif

static void track_begin(void) {
#ifdef FUZZ_TRACK_HEAP
    static int installed;
    if (!installed) {
        __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
        installed = 1;
    }
    num_blocks = 0;
    blocks_overflowed = 0;
#endif
    num_open_files = 0;
    tracking = 1;
}

/* After a fatal error: nothing refers to what the call held any more. */
static void release_all(void) {
    tracking = 0;
    while (num_open_files > 0) __real_fclose(open_files[--num_open_files]);
#ifdef FUZZ_TRACK_HEAP
    if (blocks_overflowed) fuzz_fail("more than %d allocations in one call", MAX_BLOCKS);
    for (size_t i = num_blocks; i-- > 0;) {
        const void *p = (const void *)blocks[i];
        if (__sanitizer_get_ownership(p)) free((void *)p);
    }
    num_blocks = 0;
#endif
}

/* ------------------------------------------------------------------------
 * Fatal errors as returns. */

static jmp_buf fatal_jump;
static int fatal_code;

static void on_fatal(int code, void *context) {
    (void)context;
    fatal_code = code;
    longjmp(fatal_jump, 1);
}

int fuzz_run(void (*body)(void *context), void *context) {
    track_begin();
    cr_set_abort_hook(on_fatal, NULL);
    if (setjmp(fatal_jump) == 0) {
        body(context);
        cr_set_abort_hook(NULL, NULL);
        tracking = 0;
        if (num_open_files > 0) fuzz_fail("%d file(s) left open", num_open_files);
        return 0;
    }
    /* cr_fatal cleared the hook before calling it. */
    release_all();
    return fatal_code;
}

/* ------------------------------------------------------------------------
 * Inputs as files. */

static char dir_path[256];

static void remove_dir(void) {
    DIR *d = opendir(dir_path);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir_path);
}

const char *fuzz_dir(void) {
    if (!dir_path[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(dir_path, sizeof dir_path, "%s/cresnet-fuzz-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(dir_path)) fuzz_fail("mkdtemp %s: %s", dir_path, strerror(errno));
        atexit(remove_dir);
    }
    return dir_path;
}

const char *fuzz_write_file(const char *name, const void *data, size_t size, char *path,
                            size_t path_len) {
    snprintf(path, path_len, "%s/%s", fuzz_dir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) fuzz_fail("open %s: %s", path, strerror(errno));
    const char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0) fuzz_fail("write %s: %s", path, strerror(errno));
        p += n;
        size -= (size_t)n;
    }
    close(fd);
    return path;
}
