/* Fuzz target: the YAML config loader with `-o key=value` overrides.
 *
 * Input: the config file's text, then optionally a NUL byte and up to 8
 * NUL-separated overrides ("a.b=value"). Properties:
 *   - cr_config_load either returns or fails with exit code 2 (never 70, a
 *     crash, a leak, UB or a file left open);
 *   - a loaded config describes a valid model (cr_config_model does not fail);
 *   - its written form (cr_config_write) loads back to the same struct, with
 *     the same digest. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */

#include "fuzz_support.h"

#include "cresnet/config.h"
#include "cresnet/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_OVERRIDES = 8 };

typedef struct {
    const char *path;
    const char *overrides[MAX_OVERRIDES];
    int num_overrides;
    cr_config cfg;
} load_call;

static void load(void *context) {
    load_call *c = context;
    cr_config_load(c->path, c->overrides, c->num_overrides, &c->cfg);
}

static void describe(void *context) {
    cr_model_desc desc = cr_config_model(context);
    (void)desc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* One copy with a NUL after every part: file text, then overrides. */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t file_len = strnlen(text, size);
    char path[512];
    static load_call call, again; /* large: off the stack */
    memset(&call, 0, sizeof call);
    call.path = fuzz_write_file("config.yaml", text, file_len, path, sizeof path);
    for (size_t at = file_len + 1; at < size && call.num_overrides < MAX_OVERRIDES;
         at += strlen(text + at) + 1)
        call.overrides[call.num_overrides++] = text + at;

    int code = fuzz_run(load, &call);
    free(text);
    if (code == CR_EXIT_USAGE) return 0;
    if (code != 0) fuzz_fail("cr_config_load exited %d, expected 0 or 2", code);

    if (fuzz_run(describe, &call.cfg) != 0) fuzz_fail("a loaded config has an invalid model");

    /* The written form loads back to the same struct. */
    char *written = NULL;
    size_t written_len = 0;
    FILE *out = open_memstream(&written, &written_len);
    if (!out) fuzz_fail("open_memstream failed");
    cr_config_write(&call.cfg, out);
    fclose(out);
    char path2[512];
    memset(&again, 0, sizeof again);
    again.path = fuzz_write_file("written.yaml", written, written_len, path2, sizeof path2);
    code = fuzz_run(load, &again);
    if (code != 0) fuzz_fail("the written config does not load back (exit %d):\n%s", code, written);
    if (memcmp(&call.cfg, &again.cfg, sizeof call.cfg) != 0 ||
        cr_config_digest(&call.cfg) != cr_config_digest(&again.cfg))
        fuzz_fail("the written config loads back different:\n%s", written);
    free(written);
    return 0;
}
