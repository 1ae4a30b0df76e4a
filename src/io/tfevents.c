/* TensorBoard event files, written without TensorFlow or protobuf: the few
 * protobuf fields a scalar needs are encoded by hand. Schema (tensorflow
 * event.proto, summary.proto):
 *   Event   { double wall_time = 1; int64 step = 2;
 *             oneof { string file_version = 3; Summary summary = 5; } }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; }
 * Each Event is framed as a TFRecord: u64 length, u32 masked CRC32C of the
 * length bytes, the bytes, u32 masked CRC32C of the bytes (little-endian). */
#define _POSIX_C_SOURCE 200809L /* gethostname, getpid */
#include "cresnet/error.h"
#include "cresnet/io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct cr_tfevents {
    FILE *file;
    char path[1400]; /* dir (at most CR_PATH_MAX), then the file name */
};

uint32_t cr_crc32c(const void *data, size_t len) {
    const uint8_t *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* TFRecord masks CRCs so that a CRC of data containing CRCs stays strong. */
static uint32_t masked_crc(const void *data, size_t len) {
    uint32_t crc = cr_crc32c(data, len);
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

/* ---- protobuf wire format: just what an Event with a scalar needs ---- */

typedef struct {
    uint8_t bytes[512];
    size_t len;
} pb_buffer;

static void pb_put(pb_buffer *b, const void *src, size_t n) {
    CR_ASSERT(b->len + n <= sizeof b->bytes);
    memcpy(b->bytes + b->len, src, n);
    b->len += n;
}

static void pb_varint(pb_buffer *b, uint64_t v) {
    do {
        uint8_t byte = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v) byte |= 0x80;
        pb_put(b, &byte, 1);
    } while (v);
}

static void pb_little_endian(pb_buffer *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) {
        uint8_t byte = (uint8_t)(v >> (8 * i));
        pb_put(b, &byte, 1);
    }
}

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_BYTES = 2, WIRE_FIXED32 = 5 };

static void pb_key(pb_buffer *b, int field, int wire_type) {
    pb_varint(b, (uint64_t)(field << 3 | wire_type));
}

static void pb_bytes(pb_buffer *b, int field, const void *data, size_t n) {
    pb_key(b, field, WIRE_BYTES);
    pb_varint(b, n);
    pb_put(b, data, n);
}

static void pb_double(pb_buffer *b, int field, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    pb_key(b, field, WIRE_FIXED64);
    pb_little_endian(b, bits, 8);
}

static void pb_float(pb_buffer *b, int field, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    pb_key(b, field, WIRE_FIXED32);
    pb_little_endian(b, bits, 4);
}

/* An Event with wall_time and step, the rest of its fields to follow. */
static pb_buffer event_header(long step) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pb_buffer e = {.len = 0};
    pb_double(&e, 1, (double)ts.tv_sec + ts.tv_nsec * 1e-9);
    pb_key(&e, 2, WIRE_VARINT);
    pb_varint(&e, (uint64_t)(int64_t)step); /* int64: negatives as 10-byte two's complement */
    return e;
}

/* ---- the file ---- */

static void write_record(cr_tfevents *w, const pb_buffer *event) {
    uint8_t length[8];
    for (int i = 0; i < 8; i++) length[i] = (uint8_t)((uint64_t)event->len >> (8 * i));
    uint32_t crcs[2] = {masked_crc(length, sizeof length), masked_crc(event->bytes, event->len)};
    uint8_t crc_bytes[2][4];
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 4; i++) crc_bytes[k][i] = (uint8_t)(crcs[k] >> (8 * i));
    if (fwrite(length, 1, 8, w->file) != 8 || fwrite(crc_bytes[0], 1, 4, w->file) != 4 ||
        fwrite(event->bytes, 1, event->len, w->file) != event->len ||
        fwrite(crc_bytes[1], 1, 4, w->file) != 4)
        cr_fatal(CR_EXIT_USAGE, w->path, "cannot write: %s", strerror(errno));
}

cr_tfevents *cr_tfevents_open(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        cr_fatal(CR_EXIT_USAGE, dir, "cannot create directory: %s", strerror(errno));
    cr_tfevents *w = cr_malloc(sizeof *w, "tensorboard");
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    /* TensorBoard orders a directory's files by name: the time comes first. */
    snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%010lld.%s.%ld.cresnet", dir,
             (long long)time(NULL), host, (long)getpid());
    w->file = cr_fopen(w->path, "wb", CR_EXIT_USAGE);
    pb_buffer e = event_header(0);
    static const char version[] = "brain.Event:2";
    pb_bytes(&e, 3, version, sizeof version - 1);
    write_record(w, &e);
    cr_tfevents_flush(w);
    return w;
}

void cr_tfevents_scalar(cr_tfevents *w, const char *tag, long step, double value) {
    size_t tag_len = strlen(tag);
    CR_ASSERT(tag_len < 256);
    pb_buffer v = {.len = 0}, summary = {.len = 0};
    pb_bytes(&v, 1, tag, tag_len);
    pb_float(&v, 2, (float)value);
    pb_bytes(&summary, 1, v.bytes, v.len);
    pb_buffer e = event_header(step);
    pb_bytes(&e, 5, summary.bytes, summary.len);
    write_record(w, &e);
}

void cr_tfevents_flush(cr_tfevents *w) {
    if (fflush(w->file) != 0) cr_fatal(CR_EXIT_USAGE, w->path, "cannot write: %s", strerror(errno));
}

void cr_tfevents_close(cr_tfevents *w) {
    if (!w) return;
    cr_tfevents_flush(w);
    if (fclose(w->file) != 0) cr_fatal(CR_EXIT_USAGE, w->path, "cannot write: %s", strerror(errno));
    free(w);
}

const char *cr_tfevents_path(const cr_tfevents *w) { return w->path; }
