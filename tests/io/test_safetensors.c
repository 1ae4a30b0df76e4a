/* test_safetensors: round trips through cr_safetensors_write/read, and every
 * kind of damaged file refused with a reason instead of loaded.
 * Standalone: exits 0 when every check passes, prints `N passed, N failed`. */
#define _POSIX_C_SOURCE 200809L

#include "cresnet/io.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int passed, failed;
    char dir[64]; /* the mkdtemp folder every file goes in */
} suite;

static void check(suite *s, int ok, const char *what, const char *file, int line) {
    if (ok) {
        s->passed++;
        return;
    }
    s->failed++;
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
}

#define CHECK(s, cond) check((s), (cond) != 0, #cond, __FILE__, __LINE__)

static void path_in(const suite *s, const char *name, char *out, size_t len) {
    snprintf(out, len, "%s/%s", s->dir, name);
}

static int write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t wrote = n ? fwrite(bytes, 1, n, f) : 0;
    return (fclose(f) == 0 && wrote == n) ? 0 : -1;
}

/* A file with the given header length field, header text and payload, so a
 * test can lie in any part of it. */
static int write_raw(const char *path, uint64_t header_len, const char *json, const void *payload,
                     size_t payload_len) {
    size_t json_len = strlen(json);
    size_t n = 8 + json_len + payload_len;
    unsigned char *buf = malloc(n);
    if (!buf) return -1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(header_len >> (8 * i));
    memcpy(buf + 8, json, json_len);
    if (payload_len) memcpy(buf + 8 + json_len, payload, payload_len);
    int rc = write_bytes(path, buf, n);
    free(buf);
    return rc;
}

static int write_json(const char *path, const char *json, const void *payload, size_t len) {
    return write_raw(path, strlen(json), json, payload, len);
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    return size;
}

/* The file's u64 little-endian header length field. */
static uint64_t header_length(const char *path) {
    unsigned char b[8] = {0};
    FILE *f = fopen(path, "rb");
    if (f) {
        if (fread(b, 1, 8, f) != 8) memset(b, 0xff, 8);
        fclose(f);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    return n;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int count_files(const suite *s) {
    DIR *d = opendir(s->dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static void remove_all(const suite *s) {
    DIR *d = opendir(s->dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char path[512];
        path_in(s, e->d_name, path, sizeof path);
        remove(path);
    }
    closedir(d);
    rmdir(s->dir);
}

/* ------------------------------------------------------------------------ */

static void test_round_trip(suite *s) {
    float a[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
    double b[2] = {3.141592653589793, -1e-300};
    int32_t c[4] = {1, -2, 2147483647, -2147483647 - 1};
    int64_t d = -1234567890123LL;
    uint8_t e[5] = {0, 1, 127, 128, 255};
    uint16_t f[3] = {0x3f80, 0xc000, 0x7fc0};
    uint8_t g[2] = {1, 0};
    cr_st_entry entries[] = {
        {"conv1.weight", "F32", 2, {2, 3}, a},
        {"b", "F64", 1, {2}, b},
        {"labels", "I32", 1, {4}, c},
        {"step", "I64", 0, {0}, &d},
        {"bytes", "U8", 1, {5}, e},
        {"half", "BF16", 1, {3}, f},
        {"mask", "BOOL", 1, {2}, g},
        {"empty", "F32", 3, {3, 0, 2}, NULL},
        {"caf\xc3\xa9 \"q\"", "I8", 1, {0}, NULL},
    };
    int n = (int)(sizeof entries / sizeof entries[0]);
    const char *note = "say \"hi\"\\ then\nnewline\ttab";
    const char *meta[] = {"note", note, "epoch", "3", "ctl", "a\001b/"};
    char path[256], err[256] = "";
    path_in(s, "round.safetensors", path, sizeof path);

    CHECK(s, cr_safetensors_write(path, entries, n, meta, 3, err, sizeof err) == 0);
    if (err[0]) fprintf(stderr, "  write: %s\n", err);
    long size = file_size(path);
    CHECK(s, size > 8);
    CHECK(s, count_files(s) == 1); /* no temporary file left behind */

    cr_safetensors st;
    int rc = cr_safetensors_read(path, &st, err, sizeof err);
    CHECK(s, rc == 0);
    if (rc) {
        fprintf(stderr, "  read: %s\n", err);
        return;
    }
    CHECK(s, st.num_tensors == n);
    CHECK(s, st.num_meta == 3);
    size_t total = 0;
    for (int i = 0; i < n && i < st.num_tensors; i++) {
        const cr_st_tensor *t = &st.tensors[i];
        size_t bytes = t->end - t->begin;
        CHECK(s, strcmp(t->name, entries[i].name) == 0);
        CHECK(s, strcmp(t->dtype, entries[i].dtype) == 0);
        CHECK(s, t->ndim == entries[i].ndim);
        CHECK(s, memcmp(t->shape, entries[i].shape, (size_t)t->ndim * sizeof t->shape[0]) == 0);
        CHECK(s, t->begin == total); /* packed back to back, in order */
        CHECK(s, bytes == 0 || memcmp(st.data + t->begin, entries[i].data, bytes) == 0);
        total += bytes;
    }
    CHECK(s, st.data_size == total);
    uint64_t header_len = header_length(path);
    CHECK(s, header_len % 8 == 0); /* padded so the data starts 8-aligned */
    CHECK(s, (uint64_t)size == 8 + header_len + total);

    CHECK(s, strcmp(cr_safetensors_meta(&st, "note"), note) == 0);
    CHECK(s, strcmp(cr_safetensors_meta(&st, "epoch"), "3") == 0);
    CHECK(s, strcmp(cr_safetensors_meta(&st, "ctl"), "a\001b/") == 0);
    CHECK(s, cr_safetensors_meta(&st, "missing") == NULL);

    const cr_st_tensor *t = cr_safetensors_find(&st, "conv1.weight");
    CHECK(s, t != NULL && cr_st_numel(t) == 6 && t->end - t->begin == 24);
    t = cr_safetensors_find(&st, "step");
    CHECK(s, t != NULL && t->ndim == 0 && cr_st_numel(t) == 1);
    CHECK(s, t != NULL && memcmp(st.data + t->begin, &d, 8) == 0);
    t = cr_safetensors_find(&st, "empty");
    CHECK(s, t != NULL && cr_st_numel(t) == 0 && t->begin == t->end);
    t = cr_safetensors_find(&st, "caf\xc3\xa9 \"q\"");
    CHECK(s, t != NULL && cr_st_numel(t) == 0);
    CHECK(s, cr_safetensors_find(&st, "missing") == NULL);
    CHECK(s, cr_safetensors_find(&st, "conv1") == NULL);

    cr_safetensors_free(&st);
    CHECK(s, st.tensors == NULL && st.data == NULL && st.num_tensors == 0);
    cr_safetensors_free(&st); /* freeing twice is harmless */
    remove(path);
}

static void test_empty_and_overwrite(suite *s) {
    char path[256], err[256] = "";
    path_in(s, "over.safetensors", path, sizeof path);
    cr_safetensors st;

    /* nothing at all: "{}" padded to 8 */
    CHECK(s, cr_safetensors_write(path, NULL, 0, NULL, 0, err, sizeof err) == 0);
    CHECK(s, file_size(path) == 16);
    CHECK(s, cr_safetensors_read(path, &st, err, sizeof err) == 0);
    CHECK(s, st.num_tensors == 0 && st.num_meta == 0 && st.data_size == 0);
    cr_safetensors_free(&st);

    /* a second write replaces the first */
    float x[2] = {7.0f, 8.0f};
    cr_st_entry e = {"x", "F32", 1, {2}, x};
    CHECK(s, cr_safetensors_write(path, &e, 1, NULL, 0, err, sizeof err) == 0);
    CHECK(s, cr_safetensors_read(path, &st, err, sizeof err) == 0);
    CHECK(s, st.num_tensors == 1 && st.data_size == 8);
    CHECK(s, st.num_tensors == 1 && memcmp(st.data, x, 8) == 0);
    cr_safetensors_free(&st);
    CHECK(s, count_files(s) == 1);
    remove(path);
}

/* A header another writer might produce: whitespace, escapes, a surrogate
 * pair, metadata last, tensors out of offset order, padding. */
static void test_hand_written(suite *s) {
    const char *json =
        " {\n  \"b\\u00e9\\/\\ud83d\\ude00\" : { \"shape\" : [ 2 ], \"dtype\":\"I16\",\n"
        "  \"data_offsets\" : [ 4 , 8 ] },\n"
        "  \"a\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]},\n"
        "  \"__metadata__\" : {\"k\\n\":\"\\\"v\\\\\"}\t}\r\n      ";
    unsigned char payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char path[256], err[256] = "";
    path_in(s, "hand.safetensors", path, sizeof path);
    CHECK(s, write_json(path, json, payload, sizeof payload) == 0);
    cr_safetensors st;
    int rc = cr_safetensors_read(path, &st, err, sizeof err);
    CHECK(s, rc == 0);
    if (rc) {
        fprintf(stderr, "  read: %s\n", err);
        return;
    }
    CHECK(s, st.num_tensors == 2 && st.num_meta == 1);
    const cr_st_tensor *t = cr_safetensors_find(&st, "b\xc3\xa9/\xf0\x9f\x98\x80");
    CHECK(s, t != NULL && strcmp(t->dtype, "I16") == 0 && t->begin == 4 && t->end == 8);
    CHECK(s, t == &st.tensors[0]); /* file order, not offset order */
    CHECK(s, t != NULL && st.data[t->begin] == 5);
    const char *v = cr_safetensors_meta(&st, "k\n");
    CHECK(s, v != NULL && strcmp(v, "\"v\\") == 0);
    cr_safetensors_free(&st);
    remove(path);
}

/* ------------------------------------------------------------------------ */
/* damaged files                                                             */

/* The read must fail, leave st empty and give a one-line reason mentioning
 * `expect`. */
static void refused(suite *s, const char *path, const char *expect, const char *label,
                    const char *file, int line) {
    cr_safetensors st;
    char err[256] = "";
    int rc = cr_safetensors_read(path, &st, err, sizeof err);
    int ok = rc == -1 && err[0] && !strchr(err, '\n') && strstr(err, expect) &&
             st.tensors == NULL && st.meta == NULL && st.data == NULL && st.num_tensors == 0;
    check(s, ok, label, file, line);
    if (!ok)
        fprintf(stderr, "  rc %d, reason \"%s\", wanted \"%s\"\n", rc, err, expect);
    else
        printf("refused %-32s %s\n", label, err);
    if (rc == 0) cr_safetensors_free(&st);
}

#define REFUSED(s, path, expect, label) refused((s), (path), (expect), (label), __FILE__, __LINE__)

/* A header with one tensor `x` of the given pieces, 16 bytes of data. */
static void refused_json(suite *s, const char *json, size_t payload_len, const char *expect,
                         const char *label, const char *file, int line) {
    static const unsigned char payload[64];
    char path[256];
    path_in(s, "bad.safetensors", path, sizeof path);
    if (write_json(path, json, payload, payload_len) != 0) {
        check(s, 0, "writing the damaged file", file, line);
        return;
    }
    refused(s, path, expect, label, file, line);
    remove(path);
}

#define REFUSED_JSON(s, json, payload_len, expect, label)                                          \
    refused_json((s), (json), (payload_len), (expect), (label), __FILE__, __LINE__)

static void test_damaged_files(suite *s) {
    char path[256], err[256];
    path_in(s, "cut.safetensors", path, sizeof path);

    /* a good file, cut in various places */
    float x[4] = {1, 2, 3, 4};
    cr_st_entry e = {"x", "F32", 1, {4}, x};
    CHECK(s, cr_safetensors_write(path, &e, 1, NULL, 0, err, sizeof err) == 0);
    long size = file_size(path);
    unsigned char *whole = malloc((size_t)size);
    FILE *f = fopen(path, "rb");
    CHECK(s, whole && f && fread(whole, 1, (size_t)size, f) == (size_t)size);
    if (f) fclose(f);
    CHECK(s, write_bytes(path, whole, (size_t)size - 4) == 0);
    REFUSED(s, path, "truncated", "truncated payload");
    CHECK(s, write_bytes(path, whole, 20) == 0);
    REFUSED(s, path, "exceeds", "file cut inside the header");
    CHECK(s, write_bytes(path, whole, 5) == 0);
    REFUSED(s, path, "truncated", "file cut inside the length");
    CHECK(s, write_bytes(path, whole, 0) == 0);
    REFUSED(s, path, "empty", "empty file");
    free(whole);

    CHECK(s, write_raw(path, 99999, "{}      ", NULL, 0) == 0);
    REFUSED(s, path, "header length 99999 exceeds", "header length larger than file");
    CHECK(s, write_raw(path, 200000000ull, "{}      ", NULL, 0) == 0);
    REFUSED(s, path, "limit", "header length over 100 MB");
    CHECK(s, write_raw(path, UINT64_MAX, "{}      ", NULL, 0) == 0);
    REFUSED(s, path, "limit", "header length 2^64-1");
    remove(path);

    path_in(s, "does-not-exist.safetensors", path, sizeof path);
    REFUSED(s, path, "cannot open", "nonexistent file");
    REFUSED(s, s->dir, "not a regular file", "a directory");

#define T(fields) "{\"x\":{" fields "}}"
#define GOOD "\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]"
    /* the pieces below are wrong one at a time; all together they are fine */
    cr_safetensors st;
    path_in(s, "good.safetensors", path, sizeof path);
    CHECK(s, write_json(path, T(GOOD) "   ", x, 16) == 0);
    CHECK(s, cr_safetensors_read(path, &st, err, sizeof err) == 0);
    cr_safetensors_free(&st);
    remove(path);
    REFUSED_JSON(s, "this is not json", 16, "malformed JSON header at byte 0", "garbage JSON");
    REFUSED_JSON(s, "{\"x\" {}}", 0, "expected ':'", "missing colon");
    REFUSED_JSON(s, "", 0, "malformed JSON", "empty header");
    REFUSED_JSON(s, "[]", 0, "expected '{'", "array header");
    REFUSED_JSON(s, T(GOOD) ",", 16, "unexpected data", "data after the object");
    REFUSED_JSON(s, T(GOOD) "}", 16, "unexpected data", "extra brace");
    REFUSED_JSON(s, "{\"x\":{" GOOD "}", 16, "expected ',' or '}'", "unclosed object");
    REFUSED_JSON(s, "{\"x\":{" GOOD ",}}", 16, "expected a string key", "trailing comma");
    REFUSED_JSON(s, "{\"x", 0, "unterminated string", "unterminated string");
    REFUSED_JSON(s, "{\"x\\q\":{}}", 0, "unknown escape", "unknown escape");
    REFUSED_JSON(s, "{\"x\\u12g4\":{}}", 0, "bad \\u escape", "bad \\u escape");
    REFUSED_JSON(s, "{\"x\\ud800\":{}}", 0, "surrogate", "lone high surrogate");
    REFUSED_JSON(s, "{\"x\\udc00\":{}}", 0, "surrogate", "lone low surrogate");
    REFUSED_JSON(s, "{\"x\\u0000\":{}}", 0, "\\u0000", "NUL in a name");
    REFUSED_JSON(s, "{\"x\ty\":{}}", 0, "control character", "raw tab in a string");
    REFUSED_JSON(s, "{\"\xff\":{}}", 0, "UTF-8", "invalid UTF-8");
    REFUSED_JSON(s, "{\"\xc0\xaf\":{}}", 0, "UTF-8", "overlong UTF-8");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4.0],\"data_offsets\":[0,16]"), 16,
                 "expected an integer", "float in a shape");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]"), 16,
                 "non-negative integer", "negative dimension");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[04],\"data_offsets\":[0,16]"), 16,
                 "leading zero", "leading zero");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,99999999999999999999]"),
                 16, "too large", "integer overflow");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],\"x\":null"), 16,
                 "unknown field 'x'", "unknown field");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"data_offsets\":[0,16]"), 16, "missing field 'shape'",
                 "missing shape");
    REFUSED_JSON(s, T(GOOD ",\"dtype\":\"F32\""), 16, "duplicate field", "duplicate field");
    REFUSED_JSON(s, T("\"dtype\":\"F17\",\"shape\":[4],\"data_offsets\":[0,16]"), 16,
                 "unknown dtype 'F17'", "unknown dtype");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]"),
                 16, "9 dimensions", "too many dimensions");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]"), 16, "not 1",
                 "one offset");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]"), 16,
                 "data_offsets [0, 12] do not match F32 x [4] = 16 bytes", "offsets vs shape");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]"), 16,
                 "do not match", "reversed offsets");
    REFUSED_JSON(s, T("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]"), 16,
                 "outside the data", "offsets outside the data");
    REFUSED_JSON(s,
                 T("\"dtype\":\"U8\",\"shape\":[4611686018427387904,4611686018427387904],"
                   "\"data_offsets\":[0,0]"),
                 0, "too large", "shape overflowing size_t");
    REFUSED_JSON(s, "{\"x\":[]}", 0, "expected '{'", "tensor not an object");
    REFUSED_JSON(s, "{\"__metadata__\":{\"k\":1}}", 0, "not a string", "metadata not a string");
    REFUSED_JSON(s, "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key",
                 "two metadata objects");
    REFUSED_JSON(s, "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "duplicate metadata key 'k'",
                 "duplicate metadata key");
    REFUSED_JSON(s,
                 "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                 8, "duplicate tensor name 'a'", "duplicate tensor name");
    REFUSED_JSON(s,
                 "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
                 12, "tensors 'a' and 'b' overlap", "overlapping tensors");
    REFUSED_JSON(s,
                 "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}",
                 12, "belong to no tensor", "gap between tensors");
    REFUSED_JSON(s, T(GOOD), 20, "[16, 20) after the last tensor", "data after the last tensor");
    REFUSED_JSON(s, "{}", 4, "[0, 4) after the last tensor", "data without tensors");
#undef GOOD
#undef T
}

/* ------------------------------------------------------------------------ */
/* refused writes                                                            */

static void refused_write(suite *s, const char *path, const cr_st_entry *e, int n,
                          const char *const *meta, int num_meta, const char *expect,
                          const char *label, const char *file, int line) {
    char err[256] = "";
    int before = count_files(s);
    int rc = cr_safetensors_write(path, e, n, meta, num_meta, err, sizeof err);
    int ok = rc == -1 && err[0] && strstr(err, expect) && !exists(path) && count_files(s) == before;
    check(s, ok, label, file, line);
    if (!ok)
        fprintf(stderr, "  rc %d, reason \"%s\", wanted \"%s\"\n", rc, err, expect);
    else
        printf("refused %-32s %s\n", label, err);
}

#define REFUSED_WRITE(s, path, e, n, meta, num_meta, expect, label)                                \
    refused_write((s), (path), (e), (n), (meta), (num_meta), (expect), (label), __FILE__, __LINE__)

static void test_refused_writes(suite *s) {
    float x[4] = {1, 2, 3, 4};
    char path[256], missing_dir[256];
    path_in(s, "w.safetensors", path, sizeof path);
    path_in(s, "no-such-dir", missing_dir, sizeof missing_dir);
    char in_missing[300];
    snprintf(in_missing, sizeof in_missing, "%s/out.safetensors", missing_dir);

    cr_st_entry good = {"x", "F32", 1, {4}, x};
    REFUSED_WRITE(s, in_missing, &good, 1, NULL, 0, "No such file", "nonexistent directory");
    CHECK(s, !exists(missing_dir));

    cr_st_entry bad_dtype = {"x", "F17", 1, {4}, x};
    REFUSED_WRITE(s, path, &bad_dtype, 1, NULL, 0, "unknown dtype 'F17'", "write unknown dtype");
    cr_st_entry twice[2] = {{"x", "F32", 1, {4}, x}, {"x", "F32", 1, {4}, x}};
    REFUSED_WRITE(s, path, twice, 2, NULL, 0, "duplicate tensor name 'x'", "write duplicate name");
    cr_st_entry negative = {"x", "F32", 1, {-4}, x};
    REFUSED_WRITE(s, path, &negative, 1, NULL, 0, "shape", "write negative shape");
    cr_st_entry too_many = {"x", "F32", 9, {4}, x};
    REFUSED_WRITE(s, path, &too_many, 1, NULL, 0, "ndim 9", "write ndim 9");
    cr_st_entry no_data = {"x", "F32", 1, {4}, NULL};
    REFUSED_WRITE(s, path, &no_data, 1, NULL, 0, "NULL", "write NULL data");
    cr_st_entry reserved = {"__metadata__", "F32", 1, {4}, x};
    REFUSED_WRITE(s, path, &reserved, 1, NULL, 0, "__metadata__", "write reserved name");
    cr_st_entry bad_utf8 = {"\xff", "F32", 1, {4}, x};
    REFUSED_WRITE(s, path, &bad_utf8, 1, NULL, 0, "UTF-8", "write invalid UTF-8");
    const char *dup_meta[] = {"k", "a", "k", "b"};
    REFUSED_WRITE(s, path, &good, 1, dup_meta, 2, "duplicate metadata key 'k'",
                  "write duplicate metadata");
    const char *null_meta[] = {"k", NULL};
    REFUSED_WRITE(s, path, &good, 1, null_meta, 1, "NULL", "write NULL metadata");

    /* a failed write leaves an existing file alone */
    char err[256];
    CHECK(s, cr_safetensors_write(path, &good, 1, NULL, 0, err, sizeof err) == 0);
    long size = file_size(path);
    CHECK(s, cr_safetensors_write(path, &bad_dtype, 1, NULL, 0, err, sizeof err) == -1);
    CHECK(s, file_size(path) == size);
    remove(path);
}

int main(void) {
    suite s = {0};
    snprintf(s.dir, sizeof s.dir, "/tmp/test_safetensors.XXXXXX");
    if (!mkdtemp(s.dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip(&s);
    test_empty_and_overwrite(&s);
    test_hand_written(&s);
    test_damaged_files(&s);
    test_refused_writes(&s);
    CHECK(&s, count_files(&s) == 0); /* every test cleaned up after itself */
    remove_all(&s);
    printf("%d passed, %d failed\n", s.passed, s.failed);
    return s.failed == 0 ? 0 : 1;
}
