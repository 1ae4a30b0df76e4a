/* io: safetensors files, the format of checkpoints and test fixtures.
 *
 * A safetensors file is an 8-byte little-endian header length, a JSON header
 * mapping each tensor name to {dtype, shape, data_offsets} (plus an optional
 * "__metadata__" object of string to string), then the raw little-endian
 * data. Reading validates everything (header bounds, JSON syntax, offsets
 * inside the data and matching dtype x shape, no overlaps) and refuses a
 * damaged file with a message instead of loading part of it. Writing is
 * atomic: a temporary file in the same folder, fsync, rename.
 *
 * Also TensorBoard event files (tfevents): TFRecord framing (length, masked
 * CRC32C of the length, the serialized Event, masked CRC32C of it) around
 * hand-encoded Event/Summary protobufs holding scalars, which is all
 * TensorBoard needs to draw curves. Write failures exit with CR_EXIT_USAGE
 * (the run directory), like the trainer's other log files.
 * Not here: what the tensors and scalars mean (model, train), checksums of
 * checkpoint payloads. */
#ifndef CRESNET_IO_H
#define CRESNET_IO_H

#include <stddef.h>
#include <stdint.h>

enum { CR_ST_MAX_DIMS = 8 };

typedef struct {
    char *name;
    char dtype[8]; /* "F32", "F64", "I32", "I64", "U8", ... */
    int ndim;
    int64_t shape[CR_ST_MAX_DIMS];
    size_t begin, end; /* byte offsets into data */
} cr_st_tensor;

typedef struct {
    char *key, *value;
} cr_st_meta;

typedef struct {
    int num_tensors, num_meta;
    cr_st_tensor *tensors; /* in file order */
    cr_st_meta *meta;
    uint8_t *data; /* the payload after the header */
    size_t data_size;
} cr_safetensors;

/* 0 on success; -1 with a one-line reason in err (the file is not loaded). */
int cr_safetensors_read(const char *path, cr_safetensors *st, char *err, size_t err_len);
void cr_safetensors_free(cr_safetensors *st);
const cr_st_tensor *cr_safetensors_find(const cr_safetensors *st, const char *name);
const char *cr_safetensors_meta(const cr_safetensors *st, const char *key);
/* Element count of a tensor (product of its shape). */
size_t cr_st_numel(const cr_st_tensor *t);

typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[CR_ST_MAX_DIMS];
    const void *data; /* numel x dtype size bytes */
} cr_st_entry;

/* Writes entries in order and metadata pairs meta[2i] -> meta[2i+1].
 * 0 on success; -1 with a reason in err (nothing is left at path then). */
int cr_safetensors_write(const char *path, const cr_st_entry *entries, int num_entries,
                         const char *const *meta, int num_meta, char *err, size_t err_len);

/* TensorBoard: a writer of one events.out.tfevents.<time>.<host>.<pid>.cresnet
 * file in dir (created if missing). */
typedef struct cr_tfevents cr_tfevents;
cr_tfevents *cr_tfevents_open(const char *dir);
/* One scalar (tag, step, value) as its own Event, stamped with the wall time. */
void cr_tfevents_scalar(cr_tfevents *w, const char *tag, long step, double value);
/* Pushes what is written to the file (TensorBoard reads it while training). */
void cr_tfevents_flush(cr_tfevents *w);
void cr_tfevents_close(cr_tfevents *w);
/* The file's path, e.g. for messages. */
const char *cr_tfevents_path(const cr_tfevents *w);
/* CRC-32C (Castagnoli), as TFRecord frames use before masking. */
uint32_t cr_crc32c(const void *data, size_t len);

#endif
