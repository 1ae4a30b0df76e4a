/* test_tfevents: CRC-32C against its published check value, and an event
 * file read back record by record: lengths and masked CRCs as TFRecord
 * defines them, the file_version event first, then each scalar's tag and
 * float value at the protobuf positions TensorBoard reads them from.
 * (tests/train/test_reports.sh reads whole runs with the tensorboard package.) */
#define _GNU_SOURCE /* mkdtemp, memmem */
#include "check.h"

#include "cresnet/io.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t masked(const uint8_t *p, size_t n) {
    uint32_t crc = cr_crc32c(p, n);
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

/* The record's payload, after checking its frame; NULL at the end or on damage. */
static const uint8_t *next_record(const uint8_t **at, const uint8_t *end, size_t *len) {
    const uint8_t *p = *at;
    if (end - p < 12) return NULL;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)p[i] << (8 * i);
    CHECK(le32(p + 8) == masked(p, 8), "length CRC");
    if ((uint64_t)(end - p) < 16 + n) return NULL;
    CHECK(le32(p + 12 + n) == masked(p + 12, n), "data CRC");
    *len = n;
    *at = p + 16 + n;
    return p + 12;
}

/* A scalar event's tag and value: ... 0x2A len (Summary) 0x0A len (Value)
 * 0x0A len tag 0x15 float. */
static int scalar_of(const uint8_t *e, size_t len, char *tag, float *value) {
    for (size_t i = 0; i + 6 < len; i++) {
        if (e[i] != 0x2A || e[i + 2] != 0x0A || e[i + 4] != 0x0A) continue;
        size_t tag_len = e[i + 5];
        if (i + 6 + tag_len + 5 > len || e[i + 6 + tag_len] != 0x15) continue;
        memcpy(tag, e + i + 6, tag_len);
        tag[tag_len] = '\0';
        memcpy(value, e + i + 7 + tag_len, 4);
        return 1;
    }
    return 0;
}

static uint8_t *read_events(const char *dir, size_t *size) {
    DIR *d = opendir(dir);
    struct dirent *ent;
    char path[512] = "";
    while (d && (ent = readdir(d)) != NULL)
        if (strncmp(ent->d_name, "events.out.tfevents.", 20) == 0)
            snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
    if (d) closedir(d);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(1 << 16);
    *size = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

int main(void) {
    CHECK(cr_crc32c("123456789", 9) == 0xE3069283u, "CRC-32C check value: %08x",
          cr_crc32c("123456789", 9));
    CHECK(cr_crc32c("", 0) == 0, "empty CRC");

    char dir[] = "/tmp/cresnet_tfevents_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    cr_tfevents *w = cr_tfevents_open(dir);
    cr_tfevents_scalar(w, "train/loss", 1, 2.25);
    cr_tfevents_scalar(w, "test/accuracy", 30, 0.7904);
    cr_tfevents_scalar(w, "lr", 123456789012L, 1e-6);
    cr_tfevents_close(w);

    size_t size = 0;
    uint8_t *file = read_events(dir, &size);
    CHECK(file != NULL, "no event file in %s", dir);
    const uint8_t *at = file, *end = file + size;
    size_t len;
    const uint8_t *e = next_record(&at, end, &len);
    CHECK(e && len > 15 && memmem(e, len, "brain.Event:2", 13), "first event: file_version");
    const struct {
        const char *tag;
        float value;
    } want[] = {{"train/loss", 2.25f}, {"test/accuracy", 0.7904f}, {"lr", 1e-6f}};
    for (int k = 0; k < 3; k++) {
        e = next_record(&at, end, &len);
        char tag[64] = "";
        float value = 0;
        CHECK(e && scalar_of(e, len, tag, &value), "record %d: no scalar", k + 1);
        CHECK(strcmp(tag, want[k].tag) == 0, "tag %s, want %s", tag, want[k].tag);
        CHECK(value == want[k].value, "%s: %g, want %g", tag, value, want[k].value);
    }
    CHECK(at == end, "%zu bytes after the last record", (size_t)(end - at));
    free(file);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return check_finish();
}
