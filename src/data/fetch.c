/* fetch: the official CIFAR-10 binary archive, downloaded (libcurl) or local,
 * checked against its published MD5, gunzipped (zlib) and untarred here.
 * A build without libcurl (CMake's CRESNET_FETCH) refuses to download and
 * takes --from FILE only; one without zlib refuses to fetch at all.
 *
 * The tar reader is deliberately small: ustar/GNU headers with verified
 * checksums, octal sizes, GNU long names ('L') and the `path` key of POSIX
 * extended headers ('x'); only the seven wanted regular files are written,
 * every other member is skipped. Wanted members go to DIR/NAME.tmp and are
 * renamed over DIR/NAME only after the whole archive (gzip CRC included) has
 * been read and every record checked, so a bad archive replaces nothing. */
#define _POSIX_C_SOURCE 200809L /* fsync, fileno */

#include "cresnet/data.h"
#include "cresnet/error.h"
#include "fetch_internal.h"
#include "md5.h"

#ifdef CRESNET_HAVE_CURL
#include <curl/curl.h>
#endif
#ifdef CRESNET_HAVE_ZLIB
#include <zlib.h>
#endif

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    NUM_MEMBERS = 7,
    NUM_RECORD_FILES = 6, /* MEMBERS[0..6) hold 3,073-byte records */
    TAR_BLOCK = 512,
    PATH_CAP = 4096,
    CHUNK = 1 << 16,
    PAX_CAP = 1 << 16, /* an extended header larger than this is not a CIFAR archive */
    CONNECT_TIMEOUT_S = 20,
    LOW_SPEED_BYTES = 1024, /* abort a transfer slower than this ... */
    LOW_SPEED_TIME_S = 60,  /* ... for this long: a stalled link fails instead of hanging */
};

static const char *const MEMBERS[NUM_MEMBERS] = {
    "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
    "data_batch_5.bin", "test_batch.bin",   "batches.meta.txt",
};
static const char ARCHIVE_FOLDER[] = "cifar-10-batches-bin/";
static const char DOWNLOAD_NAME[] = "cifar-10-binary.tar.gz.part";

/* What a failure must remove so that a failed fetch leaves no debris. */
typedef struct {
    const char *dir;
    char download[PATH_CAP];         /* our temporary download, "" if none */
    char tmp[NUM_MEMBERS][PATH_CAP]; /* extracted, not yet renamed; "" if none */
} fetch_state;

/* Best effort, unchecked: it runs on the way to reporting another error. */
static void remove_debris(fetch_state *s) {
    if (s->download[0]) unlink(s->download);
    for (int m = 0; m < NUM_MEMBERS; m++)
        if (s->tmp[m][0]) unlink(s->tmp[m]);
}

/* Every failure after the folder exists goes through here, so no error path
 * leaves a partial download or a NAME.tmp behind. */
static _Noreturn __attribute__((format(printf, 3, 4))) void fail(fetch_state *s, const char *where,
                                                                 const char *fmt, ...) {
    char what[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    remove_debris(s);
    cr_fatal(CR_EXIT_DATA, where, "%s", what);
}

static void join(fetch_state *s, char out[PATH_CAP], const char *name, const char *suffix) {
    int n = snprintf(out, PATH_CAP, "%s/%s%s", s->dir, name, suffix);
    if (n < 0 || n >= PATH_CAP) fail(s, s->dir, "path too long");
}

/* ---- the data folder and the expected digest ---- */

static const char *resolve_dir(const char *dir) {
    if (dir && dir[0]) return dir;
    const char *env = getenv("CRESNET_DATA");
    return env && env[0] ? env : "./data/cifar-10-batches-bin";
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* mkdir -p: the default folder is two levels below the working directory.
 * A folder that exists is fine whatever mkdir says (EEXIST, or EROFS on a
 * read-only mount). */
static void make_dirs(const char *dir) {
    char path[PATH_CAP];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        cr_fatal(CR_EXIT_DATA, dir, "path too long");
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0) {
            int err = errno;
            if (!is_dir(path))
                cr_fatal(CR_EXIT_DATA, path, "cannot create folder: %s", strerror(err));
        }
        *p = saved;
        if (saved == '\0') break;
    }
}

/* A malformed digest is a usage error, caught before any download. */
static void parse_md5(const char *text, char hex[33]) {
    size_t n = strlen(text);
    for (size_t i = 0; i < n && n == 32; i++)
        if (!isxdigit((unsigned char)text[i])) n = 0;
    if (n != 32) cr_fatal(CR_EXIT_USAGE, "--md5", "expected 32 hex digits, got '%s'", text);
    for (int i = 0; i < 32; i++) hex[i] = (char)tolower((unsigned char)text[i]);
    hex[32] = '\0';
}

static void file_md5(fetch_state *s, const char *path, char hex[33]) {
    FILE *f = fopen(path, "rb");
    if (!f) fail(s, path, "cannot open: %s", strerror(errno));
    uint8_t *buf = cr_malloc(CHUNK, "md5 buffer"), digest[16];
    cr_md5 md5;
    cr_md5_init(&md5);
    size_t got;
    while ((got = fread(buf, 1, CHUNK, f)) > 0) cr_md5_update(&md5, buf, got);
    if (ferror(f) || fclose(f) != 0) fail(s, path, "read failed: %s", strerror(errno));
    free(buf);
    cr_md5_final(&md5, digest);
    cr_md5_hex(digest, hex);
}

static void check_md5(fetch_state *s, const char *where, const char *actual, const char *expected) {
    if (strcmp(actual, expected) != 0)
        fail(s, where,
             "MD5 mismatch: got %s, expected %s (damaged download, or a different archive: "
             "--md5 HEX accepts a known mirror or repack)",
             actual, expected);
}

/* ---- download ---- */

#ifdef CRESNET_HAVE_CURL

typedef struct {
    FILE *f;
    int error; /* errno of a failed write, 0 if none */
} sink;

static size_t write_to_sink(char *data, size_t size, size_t count, void *user) {
    sink *out = user;
    size_t bytes = size * count;
    if (fwrite(data, 1, bytes, out->f) != bytes) {
        out->error = errno ? errno : EIO;
        return 0; /* tells libcurl to abort with CURLE_WRITE_ERROR */
    }
    return bytes;
}

static void check_curl(fetch_state *s, const char *url, CURLcode rc, const char *what) {
    if (rc != CURLE_OK) fail(s, url, "libcurl %s: %s", what, curl_easy_strerror(rc));
}

#define SET(s, url, curl, opt, value)                                                              \
    check_curl((s), (url), curl_easy_setopt((curl), opt, value), #opt)

/* Timeouts bound every wait: an offline machine fails within
 * CONNECT_TIMEOUT_S, a stalled transfer within LOW_SPEED_TIME_S. */
static void configure(fetch_state *s, CURL *curl, const char *url, sink *out, char *errors) {
    SET(s, url, curl, CURLOPT_ERRORBUFFER, errors);
    SET(s, url, curl, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the string form replaces a deprecated bitmask */
    SET(s, url, curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(s, url, curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(s, url, curl, CURLOPT_FOLLOWLOCATION, 1L);
    SET(s, url, curl, CURLOPT_MAXREDIRS, 5L);
    SET(s, url, curl, CURLOPT_FAILONERROR, 1L); /* HTTP 4xx/5xx is a failure, not a body */
    SET(s, url, curl, CURLOPT_NOSIGNAL, 1L);    /* no SIGALRM for timeouts */
    SET(s, url, curl, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    SET(s, url, curl, CURLOPT_LOW_SPEED_LIMIT, (long)LOW_SPEED_BYTES);
    SET(s, url, curl, CURLOPT_LOW_SPEED_TIME, (long)LOW_SPEED_TIME_S);
    SET(s, url, curl, CURLOPT_USERAGENT, "cresnet");
    SET(s, url, curl, CURLOPT_WRITEFUNCTION, write_to_sink);
    SET(s, url, curl, CURLOPT_WRITEDATA, out);
}

/* Failures that mean the host could not be reached, where a local copy of
 * the archive is the way out. */
static int unreachable(CURLcode rc) {
    return rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY ||
           rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT;
}

static void download(fetch_state *s, const char *url, const char *path) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        fail(s, url, "libcurl initialisation failed");
    CURL *curl = curl_easy_init();
    if (!curl) fail(s, url, "libcurl initialisation failed");
    sink out = {.f = fopen(path, "wb")};
    if (!out.f) fail(s, path, "cannot create: %s", strerror(errno));
    snprintf(s->download, sizeof s->download, "%s", path);
    char errors[CURL_ERROR_SIZE] = "";
    configure(s, curl, url, &out, errors);
    printf("downloading %s\n", url);
    fflush(stdout);
    CURLcode rc = curl_easy_perform(curl);
    if (out.error) fail(s, path, "write failed: %s", strerror(out.error));
    if (rc != CURLE_OK)
        fail(s, url, "download failed: %s%s", errors[0] ? errors : curl_easy_strerror(rc),
             unreachable(rc) ? " (offline? --from FILE takes a local copy of the archive)" : "");
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    if (fclose(out.f) != 0) fail(s, path, "write failed: %s", strerror(errno));
}
#else
static const char NO_CURL[] = "this build has no libcurl (configured with CRESNET_FETCH=OFF or "
                              "without libcurl's development files), so it cannot download: "
                              "fetch the archive elsewhere and pass --from FILE";

static void download(fetch_state *s, const char *url, const char *path) {
    (void)path;
    fail(s, url, "%s", NO_CURL);
}
#endif

#ifdef CRESNET_HAVE_ZLIB
/* ---- gzip stream ---- */

typedef struct {
    gzFile gz;
    const char *path;          /* the archive, for messages */
    unsigned long long offset; /* uncompressed bytes consumed */
} tar_in;

static void gz_fail(fetch_state *s, tar_in *in, const char *doing) {
    int code;
    const char *why = gzerror(in->gz, &code);
    size_t n = strlen(in->path);
    if (strncmp(why, in->path, n) == 0 && strncmp(why + n, ": ", 2) == 0) why += n + 2;
    if (code == Z_ERRNO) why = strerror(errno);
    fail(s, in->path, "%s at offset %llu: %s (truncated or damaged archive)", doing, in->offset,
         why);
}

/* Reads exactly n bytes. Returns 0 only if the stream ends cleanly before the
 * first of them and at_end_ok; a partial read is always a truncated archive.
 * zlib may flag an error while still holding good data, so the error is
 * looked at only once a read comes up short. */
static int read_exact(fetch_state *s, tar_in *in, void *dst, size_t n, int at_end_ok) {
    size_t done = 0;
    while (done < n) {
        int got = gzread(in->gz, (char *)dst + done, (unsigned)(n - done));
        if (got < 0) gz_fail(s, in, "decompression failed");
        done += (size_t)got;
        in->offset += (unsigned long long)got;
        if (done == n) break;
        int code;
        gzerror(in->gz, &code);
        if (code != Z_OK) gz_fail(s, in, "decompression failed");
        if (got == 0) {
            if (done == 0 && at_end_ok) return 0;
            fail(s, in->path, "truncated archive: %zu bytes missing at offset %llu", n - done,
                 in->offset);
        }
    }
    return 1;
}

static void skip(fetch_state *s, tar_in *in, unsigned long long bytes) {
    char buf[TAR_BLOCK * 8];
    while (bytes > 0) {
        size_t n = bytes < sizeof buf ? (size_t)bytes : sizeof buf;
        read_exact(s, in, buf, n, 0);
        bytes -= n;
    }
}

static unsigned long long padding(unsigned long long size) {
    return (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
}

/* ---- tar headers ---- */

typedef struct {
    char name[PATH_CAP];
    unsigned long long size, offset; /* offset: of the header, for messages */
    char type;
} tar_header;

/* Octal field, optionally space-padded and NUL/space-terminated. Returns 0 on
 * anything else (GNU base-256 included: no CIFAR member needs 8 GB). */
static int parse_octal(const uint8_t *field, int len, unsigned long long *out) {
    int i = 0;
    while (i < len && field[i] == ' ') i++;
    unsigned long long v = 0;
    int digits = 0;
    for (; i < len && field[i] >= '0' && field[i] <= '7'; i++, digits++)
        v = v * 8 + (field[i] - '0');
    if (digits == 0 || (i < len && field[i] != ' ' && field[i] != '\0')) return 0;
    *out = v;
    return 1;
}

/* The stored checksum is the sum of the header bytes with the checksum field
 * read as spaces; historic tars summed signed chars, so both are accepted. */
static int checksum_ok(const uint8_t block[TAR_BLOCK], unsigned long long *stored,
                       unsigned long long *computed) {
    if (!parse_octal(block + 148, 8, stored)) return 0;
    unsigned long long sum = 0;
    long long signed_sum = 0;
    for (int i = 0; i < TAR_BLOCK; i++) {
        int in_field = i >= 148 && i < 156;
        sum += in_field ? ' ' : block[i];
        signed_sum += in_field ? ' ' : (signed char)block[i];
    }
    *computed = sum;
    return *stored == sum || (long long)*stored == signed_sum;
}

/* Copies a NUL-padded field that may fill its whole width. */
static size_t copy_field(char *dst, const uint8_t *field, size_t len) {
    const uint8_t *end = memchr(field, '\0', len);
    size_t n = end ? (size_t)(end - field) : len;
    memcpy(dst, field, n);
    dst[n] = '\0';
    return n;
}

static void header_name(const uint8_t block[TAR_BLOCK], char name[PATH_CAP]) {
    /* Only POSIX ustar ("ustar\0") has a prefix field; GNU tar ("ustar  ")
     * keeps other data at that place. */
    size_t n = 0;
    if (memcmp(block + 257, "ustar\0", 6) == 0 && block[345] != '\0') {
        n = copy_field(name, block + 345, 155);
        name[n++] = '/';
    }
    copy_field(name + n, block, 100);
}

/* Returns 0 at the end of the archive (a zero block, or the end of the
 * stream at a block boundary). */
static int read_header(fetch_state *s, tar_in *in, tar_header *h) {
    uint8_t block[TAR_BLOCK];
    h->offset = in->offset;
    if (!read_exact(s, in, block, TAR_BLOCK, 1)) return 0;
    int zero = 1;
    for (int i = 0; i < TAR_BLOCK && zero; i++) zero = block[i] == 0;
    if (zero) return 0;
    unsigned long long stored = 0, computed = 0;
    if (!checksum_ok(block, &stored, &computed))
        fail(s, in->path,
             "tar header at offset %llu: bad checksum (stored %llo, computed %llo): damaged "
             "archive or not a tar file",
             h->offset, stored, computed);
    header_name(block, h->name);
    if (!parse_octal(block + 124, 12, &h->size))
        fail(s, in->path, "tar header at offset %llu ('%s'): unsupported size field", h->offset,
             h->name);
    h->type = (char)block[156];
    return 1;
}

/* ---- long names: GNU 'L' and POSIX extended ('x') headers ---- */

static char *read_payload(fetch_state *s, tar_in *in, const tar_header *h) {
    if (h->size >= PAX_CAP)
        fail(s, in->path, "tar header at offset %llu: %llu-byte '%c' record is too large",
             h->offset, h->size, h->type);
    char *data = cr_malloc((size_t)h->size + 1, "tar record");
    read_exact(s, in, data, (size_t)h->size, 0);
    data[h->size] = '\0';
    skip(s, in, padding(h->size));
    return data;
}

static void set_name(fetch_state *s, tar_in *in, const tar_header *h, const char *value, size_t len,
                     char name[PATH_CAP]) {
    if (len == 0 || len >= PATH_CAP)
        fail(s, in->path, "tar header at offset %llu: long name of %zu bytes", h->offset, len);
    memcpy(name, value, len);
    name[len] = '\0';
}

/* Records are "LENGTH key=value\n", LENGTH counting the whole record. Only
 * `path` matters here; other keys (times, macOS xattrs) are ignored. */
static void parse_pax(fetch_state *s, tar_in *in, const tar_header *h, const char *data,
                      char name[PATH_CAP]) {
    const char *p = data, *end = data + h->size;
    while (p < end) {
        char *rest;
        unsigned long len = strtoul(p, &rest, 10);
        if (rest == p || *rest != ' ' || len < (unsigned long)(rest - p) + 2 ||
            len > (unsigned long)(end - p) || p[len - 1] != '\n')
            fail(s, in->path, "tar header at offset %llu: malformed extended header", h->offset);
        const char *key = rest + 1, *eq = memchr(key, '=', (size_t)(p + len - 1 - key));
        if (!eq)
            fail(s, in->path, "tar header at offset %llu: malformed extended header", h->offset);
        if (eq - key == 4 && memcmp(key, "path", 4) == 0)
            set_name(s, in, h, eq + 1, (size_t)(p + len - 1 - (eq + 1)), name);
        p += len;
    }
}

/* Reads a long-name header's payload into `name` (for the next member). */
static void read_long_name(fetch_state *s, tar_in *in, const tar_header *h, char name[PATH_CAP]) {
    char *data = read_payload(s, in, h);
    if (h->type == 'L')
        set_name(s, in, h, data, strlen(data), name); /* NUL-terminated within size */
    else
        parse_pax(s, in, h, data, name);
    free(data);
}

/* ---- members ---- */

/* Absolute names and `..` components could write outside DIR in a general
 * extractor; this one never would, but such an archive is not trustworthy. */
static void check_name(fetch_state *s, tar_in *in, const tar_header *h) {
    const char *c = h->name;
    int bad = c[0] == '/';
    while (!bad && c) {
        bad = c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == '\0');
        c = strchr(c, '/');
        if (c) c++;
    }
    if (bad)
        fail(s, in->path, "member '%s': unsafe name (absolute or containing '..'), refused",
             h->name);
}

/* Index in MEMBERS of a wanted regular file, or -1. */
static int wanted(const tar_header *h) {
    if (h->type != '0' && h->type != '\0' && h->type != '7') return -1;
    const char *n = h->name;
    while (strncmp(n, "./", 2) == 0) n += 2; /* `tar c ./cifar-10-batches-bin` repacks */
    size_t folder = sizeof ARCHIVE_FOLDER - 1;
    if (strncmp(n, ARCHIVE_FOLDER, folder) != 0) return -1;
    for (int m = 0; m < NUM_MEMBERS; m++)
        if (strcmp(n + folder, MEMBERS[m]) == 0) return m;
    return -1;
}

/* Record files are checked as they stream by, with cr_cifar_load's rules,
 * so that an archive with bad records never replaces good files. */
static void check_records(fetch_state *s, tar_in *in, const tar_header *h, const uint8_t *data,
                          size_t n, unsigned long long pos) {
    unsigned long long first = (pos + CR_CIFAR_RECORD - 1) / CR_CIFAR_RECORD;
    for (unsigned long long r = first; r * CR_CIFAR_RECORD < pos + n; r++) {
        uint8_t label = data[r * CR_CIFAR_RECORD - pos];
        if (label > 9)
            fail(s, in->path, "member '%s': record %llu has label %d, expected 0-9", h->name, r,
                 label);
    }
}

static void extract(fetch_state *s, tar_in *in, const tar_header *h, int m, uint8_t *buf) {
    if (m < NUM_RECORD_FILES && (h->size == 0 || h->size % CR_CIFAR_RECORD != 0))
        fail(s, in->path, "member '%s': size %llu is not a positive multiple of %d bytes", h->name,
             h->size, CR_CIFAR_RECORD);
    char *tmp = s->tmp[m];
    join(s, tmp, MEMBERS[m], ".tmp");
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int err = errno;
        tmp[0] = '\0'; /* nothing was created */
        fail(s, s->dir, "cannot create %s.tmp: %s", MEMBERS[m], strerror(err));
    }
    for (unsigned long long pos = 0; pos < h->size;) {
        size_t n = h->size - pos < CHUNK ? (size_t)(h->size - pos) : CHUNK;
        read_exact(s, in, buf, n, 0);
        if (m < NUM_RECORD_FILES) check_records(s, in, h, buf, n, pos);
        if (fwrite(buf, 1, n, f) != n) fail(s, tmp, "write failed: %s", strerror(errno));
        pos += n;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) fail(s, tmp, "write failed: %s", strerror(errno));
    if (fclose(f) != 0) fail(s, tmp, "write failed: %s", strerror(errno));
    skip(s, in, padding(h->size));
}

/* Reads past the tar end to the end of the gzip stream, where zlib checks
 * the CRC and length of everything decompressed. */
static void finish_stream(fetch_state *s, tar_in *in, uint8_t *buf) {
    int got;
    while ((got = gzread(in->gz, buf, CHUNK)) > 0) in->offset += (unsigned long long)got;
    if (got < 0) gz_fail(s, in, "decompression failed");
    int code;
    gzerror(in->gz, &code);
    if (code != Z_OK) gz_fail(s, in, "decompression failed");
    int rc = gzclose(in->gz);
    in->gz = NULL;
    if (rc != Z_OK) fail(s, in->path, "decompression failed: %s", zError(rc));
}

static void extract_all(fetch_state *s, const char *archive) {
    tar_in in = {.gz = gzopen(archive, "rb"), .path = archive};
    if (!in.gz) fail(s, archive, "cannot open: %s", errno ? strerror(errno) : "out of memory");
    /* zlib passes non-gzip input through unchanged; refuse it instead. */
    if (gzdirect(in.gz)) fail(s, archive, "not a gzip file");
    uint8_t *buf = cr_malloc(CHUNK, "tar buffer");
    tar_header h;
    char long_name[PATH_CAP] = ""; /* from an 'L' or 'x' header, for the next member */
    while (read_header(s, &in, &h)) {
        if (h.type == 'L' || h.type == 'x') {
            read_long_name(s, &in, &h, long_name);
            continue;
        }
        if (long_name[0]) memcpy(h.name, long_name, sizeof long_name);
        long_name[0] = '\0';
        check_name(s, &in, &h);
        int m = wanted(&h);
        if (m >= 0)
            extract(s, &in, &h, m, buf);
        else
            skip(s, &in, h.size + padding(h.size));
    }
    finish_stream(s, &in, buf);
    free(buf);
    for (int m = 0; m < NUM_MEMBERS; m++)
        if (!s->tmp[m][0])
            fail(s, archive, "no member %s%s: not the CIFAR-10 binary archive", ARCHIVE_FOLDER,
                 MEMBERS[m]);
}
#else
#define NO_ZLIB                                                                                    \
    "this build has no zlib (configured without zlib's development files), so it cannot "          \
    "unpack the archive: `tar xzf` it (it holds %s) and check that folder with "                   \
    "`cresnet data verify --dir`"

static void extract_all(fetch_state *s, const char *archive) {
    fail(s, archive, NO_ZLIB, ARCHIVE_FOLDER);
}
#endif

static void install(fetch_state *s) {
    for (int m = 0; m < NUM_MEMBERS; m++) {
        char final[PATH_CAP];
        join(s, final, MEMBERS[m], "");
        if (rename(s->tmp[m], final) != 0) fail(s, final, "cannot replace: %s", strerror(errno));
        s->tmp[m][0] = '\0';
    }
}

/* ---- the command ---- */

int cr_data_fetch_url(const char *dir, const char *from_file, const char *expected_md5,
                      const char *url) {
    char expected[33], actual[33];
    parse_md5(expected_md5 ? expected_md5 : CR_CIFAR_MD5, expected);
    /* What this build cannot do fails before any folder is made. */
#ifndef CRESNET_HAVE_CURL
    if (!from_file) cr_fatal(CR_EXIT_DATA, url, "%s", NO_CURL);
#endif
#ifndef CRESNET_HAVE_ZLIB
    cr_fatal(CR_EXIT_DATA, from_file ? from_file : url, NO_ZLIB, ARCHIVE_FOLDER);
#endif
    dir = resolve_dir(dir);
    make_dirs(dir);
    fetch_state *s = cr_calloc(1, sizeof *s, "fetch state");
    s->dir = dir;
    const char *archive = from_file;
    if (!from_file) {
        char path[PATH_CAP];
        join(s, path, DOWNLOAD_NAME, "");
        download(s, url, path);
        archive = s->download;
    }
    file_md5(s, archive, actual);
    check_md5(s, from_file ? from_file : url, actual, expected);
    extract_all(s, archive);
    install(s);
    if (s->download[0] && unlink(s->download) != 0)
        fail(s, s->download, "cannot remove: %s", strerror(errno));
    free(s);
    cr_cifar_set train = cr_cifar_load(dir, 1), test = cr_cifar_load(dir, 0);
    printf("%s: %d training and %d test images (archive MD5 %s): ok\n", dir, train.count,
           test.count, actual);
    cr_cifar_free(&train);
    cr_cifar_free(&test);
    return 0;
}

int cr_data_fetch(const char *dir, const char *from_file, const char *expected_md5) {
    return cr_data_fetch_url(dir, from_file, expected_md5, CR_CIFAR_URL);
}

int cr_data_verify_archive(const char *path, const char *expected_md5) {
    char expected[33], actual[33];
    parse_md5(expected_md5 ? expected_md5 : CR_CIFAR_MD5, expected);
    fetch_state *s = cr_calloc(1, sizeof *s, "fetch state"); /* nothing to clean up */
    file_md5(s, path, actual);
    check_md5(s, path, actual, expected);
    free(s);
    printf("%s: archive MD5 %s: ok\n", path, actual);
    return 0;
}
