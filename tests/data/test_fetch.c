/* fetch: MD5 against RFC 1321's vectors, then `cresnet data fetch` on
 * synthetic .tar.gz archives built here (a few 3,073-byte records per file):
 * a valid one installs and passes cr_cifar_load; a wrong MD5, truncated or
 * corrupted gzip, unsafe member names, a bad header checksum, bad labels and
 * missing members exit 3 with a one-line message and replace nothing; a
 * download from a local port that refuses connections fails fast. No
 * external host is contacted.
 * usage: test_fetch */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, setenv */

#include "check.h"
#include "cresnet/data.h"
#include "cresnet/error.h"
#include "fetch_internal.h"
#include "md5.h"

#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ---- MD5 ---- */

static void md5_hex_of(const void *data, size_t n, size_t chunk, char hex[33]) {
    cr_md5 m;
    uint8_t digest[16];
    cr_md5_init(&m);
    for (size_t i = 0; i < n; i += chunk)
        cr_md5_update(&m, (const char *)data + i, n - i < chunk ? n - i : chunk);
    cr_md5_final(&m, digest);
    cr_md5_hex(digest, hex);
}

static void test_md5(void) {
    static const char *const VECTORS[][2] = {
        /* RFC 1321, appendix A.5 */
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
         "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"1234567890123456789012345678901234567890123456789012345678901234567890123456789"
         "0",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    char hex[33];
    for (size_t v = 0; v < sizeof VECTORS / sizeof VECTORS[0]; v++) {
        const char *text = VECTORS[v][0];
        /* One call, and pieces that straddle 64-byte blocks differently. */
        size_t chunks[] = {strlen(text) + 1, 1, 7, 63};
        for (int c = 0; c < 4; c++) {
            md5_hex_of(text, strlen(text), chunks[c], hex);
            CHECK(strcmp(hex, VECTORS[v][1]) == 0, "md5('%s') in %zu-byte pieces = %s", text,
                  chunks[c], hex);
        }
    }
    char *million = malloc(1000000);
    CR_ASSERT(million);
    memset(million, 'a', 1000000);
    md5_hex_of(million, 1000000, 4099, hex);
    CHECK(strcmp(hex, "7707d6ae4e027c70eea2a935c2296f21") == 0, "md5(10^6 x 'a') = %s", hex);
    free(million);
}

/* ---- synthetic archives ---- */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} buffer;

static void put(buffer *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
        CR_ASSERT(b->data);
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_zeros(buffer *b, size_t n) {
    uint8_t zero[512] = {0};
    for (; n > 512; n -= 512) put(b, zero, 512);
    put(b, zero, n);
}

/* A POSIX ustar header; `prefix` (may be "") goes to the prefix field. */
static void put_header(buffer *b, const char *prefix, const char *name, size_t size, char type,
                       int bad_checksum) {
    uint8_t h[512] = {0};
    CR_ASSERT(strlen(name) <= 100 && strlen(prefix) <= 155);
    memcpy(h, name, strlen(name));
    memcpy(h + 345, prefix, strlen(prefix));
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011zo", size);
    snprintf((char *)h + 136, 12, "%011o", 1234567890);
    h[156] = (uint8_t)type;
    memcpy(h + 257,
           "ustar\0"
           "00",
           8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum + (bad_checksum ? 1 : 0));
    put(b, h, 512);
}

static void put_data(buffer *b, const void *data, size_t size) {
    put(b, data, size);
    put_zeros(b, (512 - size % 512) % 512);
}

/* Names over 100 bytes go through a GNU 'L' header, as GNU tar writes them. */
static void put_member(buffer *b, const char *name, const void *data, size_t size) {
    if (strlen(name) > 100) {
        put_header(b, "", "././@LongLink", strlen(name) + 1, 'L', 0);
        put_data(b, name, strlen(name) + 1);
        put_header(b, "", "truncated-long-name", size, '0', 0);
    } else {
        put_header(b, "", name, size, '0', 0);
    }
    put_data(b, data, size);
}

/* A POSIX extended header whose `path` names the next member. */
static void put_pax_path(buffer *b, const char *path) {
    char record[512];
    int len = (int)strlen(path) + 8; /* guess, then settle the self-counting length */
    for (int i = 0; i < 3; i++) len = snprintf(record, sizeof record, "%d path=%s\n", len, path);
    char other[] = "30 mtime=1234567890.123456789\n";
    buffer payload = {0};
    put(&payload, other, strlen(other));
    put(&payload, record, (size_t)len);
    put_header(b, "", "PaxHeaders/x", payload.len, 'x', 0);
    put_data(b, payload.data, payload.len);
    free(payload.data);
}

enum { NUM_FILES = 6 };
static const char *const FILES[NUM_FILES] = {"data_batch_1.bin", "data_batch_2.bin",
                                             "data_batch_3.bin", "data_batch_4.bin",
                                             "data_batch_5.bin", "test_batch.bin"};
static const int COUNTS[NUM_FILES] = {3, 2, 1, 4, 2, 3};
static const char META[] = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";

/* Records of file f (label i % 10, pixels from (f, i)); `bad_label` puts a
 * label 10 in record 1 of data_batch_3. */
static buffer records(int f, int bad_label) {
    buffer b = {0};
    uint8_t record[CR_CIFAR_RECORD];
    for (int i = 0; i < COUNTS[f]; i++) {
        record[0] = (uint8_t)(bad_label && f == 2 && i == 0 ? 10 : i % 10);
        for (int p = 0; p < CR_CIFAR_PIXELS; p++)
            record[1 + p] = (uint8_t)(p * 7 + i * 13 + f * 31);
        put(&b, record, sizeof record);
    }
    return b;
}

typedef struct {
    const char *extra_name; /* an extra member after the valid ones, e.g. "../evil" */
    int bad_checksum;       /* on the last header (batches.meta.txt) */
    int bad_label, missing_test;
} variant;

/* A CIFAR-10 layout exercising every header form the reader handles: a
 * folder entry, a ustar prefix, a pax path, a GNU long name, ignored files. */
static buffer make_tar(variant v) {
    buffer tar = {0};
    put_header(&tar, "", "cifar-10-batches-bin/", 0, '5', 0);
    put_member(&tar, "cifar-10-batches-bin/readme.html", "<html/>", 7);
    char long_name[200];
    snprintf(long_name, sizeof long_name, "cifar-10-batches-bin/%0150d.txt", 0);
    put_member(&tar, long_name, "long", 4);
    for (int f = 0; f < NUM_FILES; f++) {
        if (f == 5 && v.missing_test) continue;
        buffer data = records(f, v.bad_label);
        char name[100];
        snprintf(name, sizeof name, "cifar-10-batches-bin/%s", FILES[f]);
        if (f == 3) {
            put_pax_path(&tar, name);
            put_header(&tar, "", "cifar-10-batches-bin/data_bat", data.len, '0', 0);
            put_data(&tar, data.data, data.len);
        } else if (f == 5) {
            put_header(&tar, "cifar-10-batches-bin", FILES[f], data.len, '0', 0);
            put_data(&tar, data.data, data.len);
        } else {
            put_member(&tar, f == 4 ? "./cifar-10-batches-bin/data_batch_5.bin" : name, data.data,
                       data.len);
        }
        free(data.data);
    }
    put_header(&tar, "", "cifar-10-batches-bin/batches.meta.txt", strlen(META), '0',
               v.bad_checksum);
    put_data(&tar, META, strlen(META));
    if (v.extra_name) put_member(&tar, v.extra_name, "evil", 4);
    put_zeros(&tar, 1024);                    /* end of archive */
    put_zeros(&tar, 10240 - tar.len % 10240); /* GNU tar's record padding */
    return tar;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CR_ASSERT(f);
    CR_ASSERT(fwrite(data, 1, n, f) == n);
    CR_ASSERT(fclose(f) == 0);
}

static void write_gz(const char *path, const buffer *tar) {
    gzFile gz = gzopen(path, "wb9");
    CR_ASSERT(gz);
    CR_ASSERT(gzwrite(gz, tar->data, (unsigned)tar->len) == (int)tar->len);
    CR_ASSERT(gzclose(gz) == Z_OK);
}

static buffer read_all(const char *path) {
    buffer b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return b;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) put(&b, chunk, n);
    fclose(f);
    if (!b.data) put(&b, "", 0);
    return b;
}

static void file_md5(const char *path, char hex[33]) {
    buffer b = read_all(path);
    md5_hex_of(b.data, b.len, 1 << 16, hex);
    free(b.data);
}

static const char *make_archive(const char *root, const char *name, variant v) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, name);
    buffer tar = make_tar(v);
    write_gz(path, &tar);
    free(tar.data);
    return path;
}

/* ---- running a fetch in a child ---- */

typedef struct {
    const char *dir, *from, *md5, *url;
    const char *env_dir; /* set $CRESNET_DATA to this and pass no dir */
} fetch_args;

typedef struct {
    int code;       /* exit status, -1 if killed */
    char msg[2048]; /* stderr */
    double seconds;
} outcome;

static outcome run_fetch(fetch_args a) {
    outcome o = {.code = -1};
    int fds[2];
    CR_ASSERT(pipe(fds) == 0);
    fflush(stdout);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    CR_ASSERT(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        if (!freopen("/dev/null", "w", stdout)) _exit(99);
        if (a.env_dir) setenv("CRESNET_DATA", a.env_dir, 1);
        exit(cr_data_fetch_url(a.dir, a.from, a.md5, a.url ? a.url : CR_CIFAR_URL));
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t got;
    /* The bound first: gcc 13's fortified read() otherwise warns that the
       size could wrap. */
    while (len < sizeof o.msg - 1 && (got = read(fds[0], o.msg + len, sizeof o.msg - 1 - len)) > 0)
        len += (size_t)got;
    o.msg[len] = '\0';
    close(fds[0]);
    int status;
    CR_ASSERT(waitpid(pid, &status, 0) == pid);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    o.seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (WIFEXITED(status)) o.code = WEXITSTATUS(status);
    return o;
}

static int one_line(const char *msg) {
    const char *nl = strchr(msg, '\n');
    return strncmp(msg, "cresnet: error: ", 16) == 0 && nl && nl[1] == '\0';
}

#define CHECK_FAILS(o, code_, text)                                                                \
    CHECK((o).code == (code_) && strstr((o).msg, (text)) && one_line((o).msg),                     \
          "expected exit %d with '%s', got %d: %s", (code_), (text), (o).code, (o).msg)

/* The folder holds exactly the valid synthetic files: no debris, nothing
 * replaced by a failed fetch. */
static int dir_intact(const char *dir) {
    int ok = 1;
    char path[1024];
    for (int f = 0; f < NUM_FILES; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, FILES[f]);
        buffer got = read_all(path), want = records(f, 0);
        ok &= got.len == want.len && memcmp(got.data, want.data, want.len) == 0;
        free(got.data);
        free(want.data);
        snprintf(path, sizeof path, "%s/%s.tmp", dir, FILES[f]);
        ok &= access(path, F_OK) != 0;
    }
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    buffer meta = read_all(path);
    ok &= meta.len == strlen(META) && memcmp(meta.data, META, meta.len) == 0;
    free(meta.data);
    snprintf(path, sizeof path, "%s/batches.meta.txt.tmp", dir);
    ok &= access(path, F_OK) != 0;
    snprintf(path, sizeof path, "%s/cifar-10-binary.tar.gz.part", dir);
    ok &= access(path, F_OK) != 0;
    return ok;
}

/* ---- the tests ---- */

static void test_valid(const char *root, const char *dir, const char *good) {
    char md5[33];
    file_md5(good, md5);
    outcome o = run_fetch((fetch_args){.dir = dir, .from = good, .md5 = md5});
    CHECK(o.code == 0 && o.msg[0] == '\0', "valid archive: exit %d: %s", o.code, o.msg);
    CHECK(dir_intact(dir), "valid archive: extracted files differ or debris left");
    char path[1024];
    snprintf(path, sizeof path, "%s/readme.html", dir);
    CHECK(access(path, F_OK) != 0, "an ignored member was extracted");
    cr_cifar_set train = cr_cifar_load(dir, 1), test = cr_cifar_load(dir, 0);
    CHECK(train.count == 12 && test.count == 3, "counts %d %d", train.count, test.count);
    cr_cifar_free(&train);
    cr_cifar_free(&test);

    /* Existing files are replaced; upper-case digests and $CRESNET_DATA work. */
    buffer junk = records(0, 0);
    memset(junk.data, 7, junk.len);
    snprintf(path, sizeof path, "%s/data_batch_1.bin", dir);
    write_file(path, junk.data, junk.len);
    free(junk.data);
    for (int i = 0; md5[i]; i++) md5[i] = (char)(md5[i] >= 'a' ? md5[i] - 32 : md5[i]);
    o = run_fetch((fetch_args){.env_dir = dir, .from = good, .md5 = md5});
    CHECK(o.code == 0 && dir_intact(dir), "refetch over old files: exit %d: %s", o.code, o.msg);
    (void)root;
}

static void test_bad_archives(const char *root, const char *dir, const char *good) {
    char md5[33];
    /* The official digest, not this archive's. */
    outcome o = run_fetch((fetch_args){.dir = dir, .from = good});
    file_md5(good, md5);
    CHECK_FAILS(o, 3, "MD5 mismatch");
    CHECK(strstr(o.msg, good) && strstr(o.msg, md5) && strstr(o.msg, CR_CIFAR_MD5),
          "mismatch names the file and both digests: %s", o.msg);
    o = run_fetch((fetch_args){.dir = dir, .from = good, .md5 = "c32a1d4ab5d03f12"});
    CHECK_FAILS(o, 2, "--md5");

    struct {
        const char *name, *expect;
        variant v;
    } cases[] = {
        {"evil.tar.gz", "'../evil': unsafe name", {.extra_name = "../evil"}},
        {"deep.tar.gz", "unsafe name", {.extra_name = "cifar-10-batches-bin/../../x"}},
        {"absolute.tar.gz", "'/tmp/evil': unsafe name", {.extra_name = "/tmp/evil"}},
        {"checksum.tar.gz", "bad checksum", {.bad_checksum = 1}},
        {"label.tar.gz", "record 0 has label 10", {.bad_label = 1}},
        {"missing.tar.gz", "no member cifar-10-batches-bin/test_batch.bin", {.missing_test = 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *path = make_archive(root, cases[c].name, cases[c].v);
        file_md5(path, md5);
        o = run_fetch((fetch_args){.dir = dir, .from = path, .md5 = md5});
        CHECK_FAILS(o, 3, cases[c].expect);
        CHECK(dir_intact(dir), "%s replaced files or left debris", cases[c].name);
    }
}

/* Damage to the gzip stream itself: cut in the middle, cut in the trailer
 * (only the CRC/length check can tell), one flipped byte, not gzip at all. */
static void test_damaged_gzip(const char *root, const char *dir, const char *good) {
    buffer gz = read_all(good), tar = make_tar((variant){0});
    struct {
        const char *name, *expect;
        size_t len;
        long flip; /* byte to invert, -1 for none */
    } cases[] = {
        {"half.tar.gz", "truncated or damaged archive", gz.len / 2, -1},
        {"trailer.tar.gz", "truncated or damaged archive", gz.len - 3, -1},
        {"flipped.tar.gz", "", gz.len, (long)gz.len / 3}, /* any data error */
        {"empty.tar.gz", "not a gzip file", 0, -1},
    };
    char path[1024], md5[33];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(path, sizeof path, "%s/%s", root, cases[c].name);
        if (cases[c].flip >= 0) gz.data[cases[c].flip] ^= 0xff;
        write_file(path, gz.data, cases[c].len);
        if (cases[c].flip >= 0) gz.data[cases[c].flip] ^= 0xff;
        file_md5(path, md5);
        outcome o = run_fetch((fetch_args){.dir = dir, .from = path, .md5 = md5});
        CHECK_FAILS(o, 3, cases[c].expect);
        CHECK(dir_intact(dir), "%s replaced files or left debris", cases[c].name);
    }
    snprintf(path, sizeof path, "%s/plain.tar", root);
    write_file(path, tar.data, tar.len);
    file_md5(path, md5);
    outcome o = run_fetch((fetch_args){.dir = dir, .from = path, .md5 = md5});
    CHECK_FAILS(o, 3, "not a gzip file");
    snprintf(path, sizeof path, "%s/absent.tar.gz", root);
    o = run_fetch((fetch_args){.dir = dir, .from = path});
    CHECK_FAILS(o, 3, "cannot open");
    free(gz.data);
    free(tar.data);
}

/* Port 9 (discard) on the loopback refuses connections: the offline path,
 * without contacting any external host. A build without libcurl refuses
 * every download at once and points at --from FILE. */
static void test_download_refused(const char *dir) {
    const char *url = "http://127.0.0.1:9/cifar-10-binary.tar.gz";
    outcome o = run_fetch((fetch_args){.dir = dir, .url = url});
    CHECK_FAILS(o, 3, url);
#ifdef CRESNET_HAVE_CURL
    CHECK(strstr(o.msg, "download failed"), "message: %s", o.msg);
#else
    CHECK(strstr(o.msg, "no libcurl") && strstr(o.msg, "--from FILE"), "message: %s", o.msg);
#endif
    CHECK(o.seconds < 15.0, "refused download took %.1f s", o.seconds);
    CHECK(dir_intact(dir), "failed download replaced files or left debris");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    test_md5();
    char root[] = "/tmp/cresnet_fetch_XXXXXX";
    CR_ASSERT(mkdtemp(root));
    char dir[256];
    snprintf(dir, sizeof dir, "%s/data/cifar-10-batches-bin", root); /* created by fetch */
    const char *good = make_archive(root, "good.tar.gz", (variant){0});
    char good_path[256];
    snprintf(good_path, sizeof good_path, "%s", good);
    test_valid(root, dir, good_path);
    test_bad_archives(root, dir, good_path);
    test_damaged_gzip(root, dir, good_path);
    test_download_refused(dir);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_finish();
}
