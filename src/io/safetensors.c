/* safetensors: reading and writing the checkpoint format (see io.h).
 *
 * Reading loads the whole file, parses the JSON header with a small strict
 * parser that knows only the shape of a safetensors header, and checks every
 * tensor against the payload before the caller sees anything. Writing builds
 * the header in memory and goes through a temporary file, fsync and rename,
 * so a crash never leaves half a checkpoint under the real name.
 *
 * The payload is copied byte for byte both ways, so tensors in memory are in
 * the file's little-endian order only on a little-endian host (x86, ARM), the
 * only hosts cresnet targets. The 8-byte header length is encoded and decoded
 * explicitly and does not depend on that. */
#define _POSIX_C_SOURCE 200809L

#include "cresnet/io.h"

#include "cresnet/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Same limit as the reference implementation: a larger length is damage or
 * an attack, not a header. */
enum { MAX_HEADER_BYTES = 100 * 1000 * 1000 };

/* ------------------------------------------------------------------------ */
/* errors, dtypes, shapes                                                    */

/* Formats a reason into err and returns -1. Names come from the file and can
 * hold escaped control characters; those become '?' so the reason stays one
 * line. */
__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_len, const char *fmt,
                                                      ...) {
    if (!err || err_len == 0) return -1;
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_len, fmt, args);
    va_end(args);
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    return -1;
}

/* Bytes per element, 0 for a dtype we do not know. */
static size_t dtype_size(const char *dtype) {
    static const struct {
        const char *name;
        size_t size;
    } dtypes[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
        {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1},
    };
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtype, dtypes[i].name) == 0) return dtypes[i].size;
    return 0;
}

/* numel x elem_size into *bytes; -1 for a negative dimension or a product
 * that does not fit in size_t (a hostile header must not wrap around to a
 * small size). Any zero dimension makes the tensor empty, whatever the rest. */
static int shape_bytes(size_t elem_size, int ndim, const int64_t *shape, size_t *bytes) {
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) {
            *bytes = 0;
            return 0;
        }
    }
    size_t n = elem_size;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (n > SIZE_MAX / d) return -1;
        n *= (size_t)d;
    }
    *bytes = n;
    return 0;
}

/* "[2, 3]", "[]" for a scalar. */
static void format_shape(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

size_t cr_st_numel(const cr_st_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* -1 naming the duplicate if some name occurs twice. Sorting keeps a header
 * with millions of tensors from costing n^2 comparisons. Reorders names. */
static int check_unique(const char **names, int n, const char *what, char *err, size_t err_len) {
    if (n < 2) return 0;
    qsort(names, (size_t)n, sizeof *names, by_name);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            return fail(err, err_len, "duplicate %s '%s'", what, names[i]);
    return 0;
}

/* Room for one more element in an array that grows by doubling. */
static void *grow(void *array, int count, int *capacity, size_t elem_size) {
    if (count < *capacity) return array;
    int cap = *capacity ? *capacity * 2 : 16;
    void *p = realloc(array, (size_t)cap * elem_size);
    if (!p) cr_fatal(CR_EXIT_INTERNAL, "safetensors", "out of memory growing to %d entries", cap);
    *capacity = cap;
    return p;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if it is
 * not one: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    size_t len;
    uint32_t cp, min;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2, cp = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3, cp = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Offset of the first byte that is not valid UTF-8, n if there is none. */
static size_t utf8_invalid_at(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_sequence((const unsigned char *)s + i, n - i);
        if (len == 0) return i;
        i += len;
    }
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------ */
/* JSON: just enough for a safetensors header                                */
/*                                                                           */
/* Strings, non-negative integers, arrays of integers and objects, nested    */
/* only as deep as the header schema allows (so no recursion depth to        */
/* exhaust). Floats, negative numbers, true/false/null and anything else     */
/* are refused: none of them belongs in a header.                            */

typedef struct {
    const char *text; /* the header, not NUL-terminated */
    size_t len, pos;
    char *err;
    size_t err_len;
} parser;

static int syntax_error(parser *p, const char *what) {
    return fail(p->err, p->err_len, "malformed JSON header at byte %zu: %s", p->pos, what);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The next significant character, -1 at the end of the header. */
static int next_char(parser *p) {
    while (p->pos < p->len && is_space(p->text[p->pos])) p->pos++;
    return p->pos < p->len ? (unsigned char)p->text[p->pos] : -1;
}

static int expect(parser *p, char c) {
    if (next_char(p) != (unsigned char)c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return syntax_error(p, what);
    }
    p->pos++;
    return 0;
}

static int hex4(parser *p, uint32_t *out) {
    if (p->len - p->pos < 4) return syntax_error(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos + i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return syntax_error(p, "bad \\u escape");
        v = v << 4 | (uint32_t)d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

/* \uXXXX with p->pos just past the 'u'. A UTF-16 surrogate pair makes one
 * code point; a lone surrogate has none. \u0000 is refused because names
 * and values become C strings. */
static int unicode_escape(parser *p, uint32_t *cp) {
    if (hex4(p, cp)) return -1;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return syntax_error(p, "lone low surrogate");
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        uint32_t low;
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
            return syntax_error(p, "high surrogate without a low one");
        p->pos += 2;
        if (hex4(p, &low)) return -1;
        if (low < 0xDC00 || low > 0xDFFF)
            return syntax_error(p, "high surrogate without a low one");
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
    }
    if (*cp == 0) return syntax_error(p, "\\u0000 is not allowed");
    return 0;
}

/* One escape with p->pos just past the backslash, appended at out + *n. */
static int escape(parser *p, char *out, size_t *n) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = p->text[p->pos++];
    const char *hit = c ? strchr(from, c) : NULL;
    if (hit) {
        out[(*n)++] = to[hit - from];
        return 0;
    }
    if (c != 'u') {
        p->pos--;
        return syntax_error(p, "unknown escape");
    }
    uint32_t cp;
    if (unicode_escape(p, &cp)) return -1;
    *n += utf8_encode(cp, out + *n);
    return 0;
}

/* A string into a fresh allocation. The closing quote is found first so the
 * buffer can be sized: decoding never makes a string longer than its
 * source. The header was checked to be UTF-8 already. */
static int parse_string(parser *p, char **out) {
    if (expect(p, '"')) return -1;
    size_t end = p->pos;
    while (end < p->len && p->text[end] != '"') end += p->text[end] == '\\' ? 2 : 1;
    if (end >= p->len) return syntax_error(p, "unterminated string");
    char *s = cr_malloc(end - p->pos + 1, "safetensors header string");
    size_t n = 0;
    while (p->text[p->pos] != '"') {
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c < 0x20) {
            free(s);
            return syntax_error(p, "control character in string");
        }
        p->pos++;
        if (c != '\\')
            s[n++] = (char)c;
        else if (escape(p, s, &n)) {
            free(s);
            return -1;
        }
    }
    p->pos++;
    s[n] = '\0';
    *out = s;
    return 0;
}

static int is_digit(parser *p) {
    return p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9';
}

/* A JSON integer without sign, fraction or exponent. */
static int parse_uint(parser *p, uint64_t *out) {
    next_char(p);
    if (!is_digit(p)) return syntax_error(p, "expected a non-negative integer");
    size_t start = p->pos;
    uint64_t v = 0;
    for (; is_digit(p); p->pos++) {
        unsigned d = (unsigned)(p->text[p->pos] - '0');
        if (v > (UINT64_MAX - d) / 10) return syntax_error(p, "integer too large");
        v = v * 10 + d;
    }
    if (p->pos - start > 1 && p->text[start] == '0') {
        p->pos = start;
        return syntax_error(p, "integer with a leading zero");
    }
    char c = p->pos < p->len ? p->text[p->pos] : ' ';
    if (c == '.' || c == 'e' || c == 'E') return syntax_error(p, "expected an integer");
    *out = v;
    return 0;
}

/* [n, n, ...]: keeps the first max values but counts all of them, so the
 * caller can say what is too long. */
static int parse_uint_array(parser *p, uint64_t *vals, int max, int *count) {
    *count = 0;
    if (expect(p, '[')) return -1;
    if (next_char(p) == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        uint64_t v = 0;
        if (parse_uint(p, &v)) return -1;
        if (*count < max) vals[*count] = v;
        (*count)++;
        int c = next_char(p);
        if (c == ']' || c == ',') p->pos++;
        if (c == ']') return 0;
        if (c != ',') return syntax_error(p, "expected ',' or ']'");
    }
}

/* Parses one member's value. It may keep the key by taking it (setting *key
 * to NULL); otherwise the key is freed after the call. */
typedef int (*member_fn)(parser *p, char **key, void *ctx);

static int parse_object(parser *p, member_fn member, void *ctx) {
    if (expect(p, '{')) return -1;
    if (next_char(p) == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        if (next_char(p) != '"') return syntax_error(p, "expected a string key");
        if (parse_string(p, &key)) return -1;
        int rc = expect(p, ':');
        if (rc == 0) rc = member(p, &key, ctx);
        free(key);
        if (rc) return -1;
        int c = next_char(p);
        if (c == '}' || c == ',') p->pos++;
        if (c == '}') return 0;
        if (c != ',') return syntax_error(p, "expected ',' or '}'");
    }
}

/* ------------------------------------------------------------------------ */
/* the header schema                                                         */

static int parse_dtype(parser *p, cr_st_tensor *t) {
    char *dtype;
    if (parse_string(p, &dtype)) return -1;
    int rc = 0;
    if (dtype_size(dtype) == 0)
        rc = fail(p->err, p->err_len, "tensor '%s': unknown dtype '%s'", t->name, dtype);
    else
        snprintf(t->dtype, sizeof t->dtype, "%s", dtype); /* known names all fit */
    free(dtype);
    return rc;
}

static int parse_shape(parser *p, cr_st_tensor *t) {
    uint64_t dims[CR_ST_MAX_DIMS];
    int n;
    if (parse_uint_array(p, dims, CR_ST_MAX_DIMS, &n)) return -1;
    if (n > CR_ST_MAX_DIMS)
        return fail(p->err, p->err_len,
                    "tensor '%s': shape has %d dimensions, at most %d supported", t->name, n,
                    CR_ST_MAX_DIMS);
    for (int i = 0; i < n; i++) {
        if (dims[i] > INT64_MAX)
            return fail(p->err, p->err_len, "tensor '%s': dimension %" PRIu64 " too large", t->name,
                        dims[i]);
        t->shape[i] = (int64_t)dims[i];
    }
    t->ndim = n;
    return 0;
}

static int parse_offsets(parser *p, cr_st_tensor *t) {
    uint64_t v[2];
    int n;
    if (parse_uint_array(p, v, 2, &n)) return -1;
    if (n != 2)
        return fail(p->err, p->err_len, "tensor '%s': data_offsets must hold 2 numbers, not %d",
                    t->name, n);
#if SIZE_MAX < UINT64_MAX
    if (v[0] > SIZE_MAX || v[1] > SIZE_MAX)
        return fail(p->err, p->err_len, "tensor '%s': data_offsets too large", t->name);
#endif
    t->begin = (size_t)v[0];
    t->end = (size_t)v[1];
    return 0;
}

static const struct {
    const char *name;
    int (*parse)(parser *p, cr_st_tensor *t);
} TENSOR_FIELDS[] = {
    {"dtype", parse_dtype}, {"shape", parse_shape}, {"data_offsets", parse_offsets}};
enum { NUM_TENSOR_FIELDS = sizeof TENSOR_FIELDS / sizeof TENSOR_FIELDS[0] };

typedef struct {
    cr_st_tensor *tensor;
    int seen[NUM_TENSOR_FIELDS];
} tensor_ctx;

static int tensor_member(parser *p, char **key, void *ctx) {
    tensor_ctx *c = ctx;
    for (int i = 0; i < NUM_TENSOR_FIELDS; i++) {
        if (strcmp(*key, TENSOR_FIELDS[i].name) != 0) continue;
        if (c->seen[i]++)
            return fail(p->err, p->err_len, "tensor '%s': duplicate field '%s'", c->tensor->name,
                        *key);
        return TENSOR_FIELDS[i].parse(p, c->tensor);
    }
    return fail(p->err, p->err_len, "tensor '%s': unknown field '%s'", c->tensor->name, *key);
}

typedef struct {
    cr_safetensors *st;
    int tensor_capacity, meta_capacity, seen_meta;
} header_ctx;

/* The tensor joins st before its fields are parsed, so that on a failure
 * cr_safetensors_free releases its name with everything else. */
static int parse_tensor(parser *p, char **key, header_ctx *h) {
    cr_safetensors *st = h->st;
    st->tensors = grow(st->tensors, st->num_tensors, &h->tensor_capacity, sizeof *st->tensors);
    cr_st_tensor *t = &st->tensors[st->num_tensors++];
    memset(t, 0, sizeof *t);
    t->name = *key;
    *key = NULL;
    tensor_ctx c = {.tensor = t};
    if (parse_object(p, tensor_member, &c)) return -1;
    for (int i = 0; i < NUM_TENSOR_FIELDS; i++)
        if (!c.seen[i])
            return fail(p->err, p->err_len, "tensor '%s': missing field '%s'", t->name,
                        TENSOR_FIELDS[i].name);
    return 0;
}

static int meta_member(parser *p, char **key, void *ctx) {
    header_ctx *h = ctx;
    cr_safetensors *st = h->st;
    if (next_char(p) != '"')
        return fail(p->err, p->err_len, "metadata '%s': value is not a string", *key);
    st->meta = grow(st->meta, st->num_meta, &h->meta_capacity, sizeof *st->meta);
    cr_st_meta *m = &st->meta[st->num_meta++];
    m->key = *key;
    m->value = NULL;
    *key = NULL;
    return parse_string(p, &m->value);
}

static int header_member(parser *p, char **key, void *ctx) {
    header_ctx *h = ctx;
    if (strcmp(*key, "__metadata__") != 0) return parse_tensor(p, key, h);
    if (h->seen_meta++) return fail(p->err, p->err_len, "duplicate key '__metadata__'");
    return parse_object(p, meta_member, h);
}

static int parse_header(const char *text, size_t len, cr_safetensors *st, char *err,
                        size_t err_len) {
    size_t bad = utf8_invalid_at(text, len);
    if (bad < len) return fail(err, err_len, "JSON header is not valid UTF-8 at byte %zu", bad);
    parser p = {.text = text, .len = len, .err = err, .err_len = err_len};
    header_ctx h = {.st = st};
    if (parse_object(&p, header_member, &h)) return -1;
    if (next_char(&p) != -1) return syntax_error(&p, "unexpected data after the header object");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* checking the tensors against the data                                     */

static int check_tensor(const cr_st_tensor *t, size_t data_size, char *err, size_t err_len) {
    char shape[256];
    size_t bytes;
    format_shape(t->ndim, t->shape, shape, sizeof shape);
    if (shape_bytes(dtype_size(t->dtype), t->ndim, t->shape, &bytes))
        return fail(err, err_len, "tensor '%s': %s x %s is too large", t->name, t->dtype, shape);
    if (t->begin > t->end || t->end - t->begin != bytes)
        return fail(err, err_len,
                    "tensor '%s': data_offsets [%zu, %zu] do not match %s x %s = %zu bytes",
                    t->name, t->begin, t->end, t->dtype, shape, bytes);
    if (t->end > data_size)
        return fail(
            err, err_len,
            "tensor '%s': data_offsets [%zu, %zu] outside the data of %zu bytes (file truncated?)",
            t->name, t->begin, t->end, data_size);
    return 0;
}

static int by_offset(const void *a, const void *b) {
    const cr_st_tensor *x = *(const cr_st_tensor *const *)a, *y = *(const cr_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The format packs tensors back to back (the reference implementation
 * refuses anything else): sorted by offset, each starts where the previous
 * ended and the last ends with the file. A gap or a tail is as much a sign
 * of damage as an overlap. Each tensor already fits inside the data. */
static int check_layout(const cr_safetensors *st, char *err, size_t err_len) {
    int n = st->num_tensors;
    const cr_st_tensor **order = cr_malloc((size_t)n * sizeof *order, "safetensors layout");
    for (int i = 0; i < n; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)n, sizeof *order, by_offset);
    const cr_st_tensor *last = NULL; /* the tensor that ends at `end` */
    size_t end = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const cr_st_tensor *t = order[i];
        if (t->begin < end)
            rc = fail(err, err_len, "tensors '%s' and '%s' overlap", last->name, t->name);
        else if (t->begin > end)
            rc = fail(err, err_len, "data bytes [%zu, %zu) belong to no tensor", end, t->begin);
        else if (t->end > end) {
            last = t;
            end = t->end;
        }
    }
    if (rc == 0 && end != st->data_size)
        rc = fail(err, err_len, "data bytes [%zu, %zu) after the last tensor belong to no tensor",
                  end, st->data_size);
    free(order);
    return rc;
}

static int check_names(const cr_safetensors *st, char *err, size_t err_len) {
    int most = st->num_tensors > st->num_meta ? st->num_tensors : st->num_meta;
    const char **names = cr_malloc((size_t)most * sizeof *names, "safetensors names");
    for (int i = 0; i < st->num_tensors; i++) names[i] = st->tensors[i].name;
    int rc = check_unique(names, st->num_tensors, "tensor name", err, err_len);
    for (int i = 0; i < st->num_meta; i++) names[i] = st->meta[i].key;
    if (rc == 0) rc = check_unique(names, st->num_meta, "metadata key", err, err_len);
    free(names);
    return rc;
}

static int check_tensors(const cr_safetensors *st, char *err, size_t err_len) {
    if (check_names(st, err, err_len)) return -1;
    for (int i = 0; i < st->num_tensors; i++)
        if (check_tensor(&st->tensors[i], st->data_size, err, err_len)) return -1;
    return check_layout(st, err, err_len);
}

/* ------------------------------------------------------------------------ */
/* reading                                                                   */

static int read_exact(FILE *f, void *dst, size_t bytes, char *err, size_t err_len) {
    if (bytes == 0) return 0;
    size_t got = fread(dst, 1, bytes, f);
    if (got == bytes) return 0;
    if (ferror(f)) return fail(err, err_len, "read failed: %s", strerror(errno));
    return fail(err, err_len, "file truncated: expected %zu more bytes, found %zu", bytes, got);
}

static int file_size(FILE *f, uint64_t *size, char *err, size_t err_len) {
    struct stat info;
    if (fstat(fileno(f), &info) != 0) return fail(err, err_len, "cannot stat: %s", strerror(errno));
    if (!S_ISREG(info.st_mode)) return fail(err, err_len, "not a regular file");
    *size = (uint64_t)info.st_size;
    return 0;
}

/* Reads the header text into *header (the caller frees it) and the payload
 * into st. The header length is checked against the file size before
 * anything is allocated for it. */
static int load(FILE *f, char **header, size_t *header_len, cr_safetensors *st, char *err,
                size_t err_len) {
    uint64_t size = 0;
    unsigned char prefix[8];
    if (file_size(f, &size, err, err_len)) return -1;
    if (size == 0) return fail(err, err_len, "file is empty");
    if (size < 8)
        return fail(err, err_len,
                    "file truncated: %" PRIu64 " bytes, less than the 8-byte header length", size);
    if (read_exact(f, prefix, 8, err, err_len)) return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | prefix[i];
    if (n > MAX_HEADER_BYTES)
        return fail(err, err_len, "header length %" PRIu64 " exceeds the limit of %d bytes", n,
                    MAX_HEADER_BYTES);
    if (n > size - 8)
        return fail(err, err_len,
                    "header length %" PRIu64 " exceeds the %" PRIu64
                    " bytes after it (file size %" PRIu64 ")",
                    n, size - 8, size);
    *header_len = (size_t)n;
    *header = cr_malloc(*header_len, "safetensors header");
    if (read_exact(f, *header, *header_len, err, err_len)) return -1;
    st->data_size = (size_t)(size - 8 - n);
    st->data = cr_malloc(st->data_size, "safetensors data");
    return read_exact(f, st->data, st->data_size, err, err_len);
}

int cr_safetensors_read(const char *path, cr_safetensors *st, char *err, size_t err_len) {
    memset(st, 0, sizeof *st);
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, err_len, "cannot open: %s", strerror(errno));
    char *header = NULL;
    size_t header_len = 0;
    int rc = load(f, &header, &header_len, st, err, err_len);
    fclose(f); /* read-only: nothing to lose if closing fails */
    if (rc == 0) rc = parse_header(header, header_len, st, err, err_len);
    if (rc == 0) rc = check_tensors(st, err, err_len);
    free(header);
    if (rc) cr_safetensors_free(st);
    return rc;
}

void cr_safetensors_free(cr_safetensors *st) {
    for (int i = 0; i < st->num_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->num_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->tensors);
    free(st->meta);
    free(st->data);
    memset(st, 0, sizeof *st);
}

const cr_st_tensor *cr_safetensors_find(const cr_safetensors *st, const char *name) {
    for (int i = 0; i < st->num_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *cr_safetensors_meta(const cr_safetensors *st, const char *key) {
    for (int i = 0; i < st->num_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* writing: checks, then the header text, then the file                     */

/* Everything the reader would refuse is refused here first, so a written
 * file always reads back. */
static int check_string(const char *s, const char *what, char *err, size_t err_len) {
    if (!s) return fail(err, err_len, "%s is NULL", what);
    size_t len = strlen(s);
    size_t bad = utf8_invalid_at(s, len);
    if (bad < len) return fail(err, err_len, "%s is not valid UTF-8 at byte %zu", what, bad);
    return 0;
}

static int check_entry(const cr_st_entry *e, size_t *total, char *err, size_t err_len) {
    size_t bytes;
    if (check_string(e->name, "tensor name", err, err_len)) return -1;
    if (strcmp(e->name, "__metadata__") == 0)
        return fail(err, err_len, "'__metadata__' cannot be a tensor name");
    if (!e->dtype || dtype_size(e->dtype) == 0)
        return fail(err, err_len, "tensor '%s': unknown dtype '%s'", e->name,
                    e->dtype ? e->dtype : "(null)");
    if (e->ndim < 0 || e->ndim > CR_ST_MAX_DIMS)
        return fail(err, err_len, "tensor '%s': ndim %d outside 0..%d", e->name, e->ndim,
                    CR_ST_MAX_DIMS);
    if (shape_bytes(dtype_size(e->dtype), e->ndim, e->shape, &bytes))
        return fail(err, err_len, "tensor '%s': negative or too large shape", e->name);
    if (bytes > SIZE_MAX - *total) return fail(err, err_len, "tensors too large together");
    if (bytes > 0 && !e->data) return fail(err, err_len, "tensor '%s': data is NULL", e->name);
    *total += bytes;
    return 0;
}

static int check_entries(const cr_st_entry *entries, int num_entries, const char *const *meta,
                         int num_meta, char *err, size_t err_len) {
    if (num_entries < 0 || num_meta < 0 || (num_entries > 0 && !entries) || (num_meta > 0 && !meta))
        return fail(err, err_len, "bad entry or metadata list");
    size_t total = 0;
    for (int i = 0; i < num_entries; i++)
        if (check_entry(&entries[i], &total, err, err_len)) return -1;
    for (int i = 0; i < 2 * num_meta; i++)
        if (check_string(meta[i], i % 2 ? "metadata value" : "metadata key", err, err_len))
            return -1;
    int most = num_entries > num_meta ? num_entries : num_meta;
    const char **names = cr_malloc((size_t)most * sizeof *names, "safetensors names");
    for (int i = 0; i < num_entries; i++) names[i] = entries[i].name;
    int rc = check_unique(names, num_entries, "tensor name", err, err_len);
    for (int i = 0; i < num_meta; i++) names[i] = meta[2 * i];
    if (rc == 0) rc = check_unique(names, num_meta, "metadata key", err, err_len);
    free(names);
    return rc;
}

static size_t entry_bytes(const cr_st_entry *e) {
    size_t bytes = 0;
    shape_bytes(dtype_size(e->dtype), e->ndim, e->shape, &bytes); /* checked already */
    return bytes;
}

typedef struct {
    char *s;
    size_t len, cap;
} text;

static void text_add(text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->s, cap);
        if (!p)
            cr_fatal(CR_EXIT_INTERNAL, "safetensors", "out of memory for a %zu-byte header", cap);
        t->s = p;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_str(text *t, const char *s) { text_add(t, s, strlen(s)); }

/* A JSON string literal: quote, backslash and control characters escaped,
 * every other byte (UTF-8, checked already) as it is. */
static void text_json_string(text *t, const char *s) {
    static const char special[] = "\"\\\n\r\t\b\f", letter[] = "\"\\nrtbf";
    text_str(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *hit = c ? strchr(special, c) : NULL;
        char buf[8];
        if (hit) {
            snprintf(buf, sizeof buf, "\\%c", letter[hit - special]);
            text_str(t, buf);
        } else if (c < 0x20) {
            snprintf(buf, sizeof buf, "\\u%04x", c);
            text_str(t, buf);
        } else {
            text_add(t, s, 1);
        }
    }
    text_str(t, "\"");
}

static void add_tensor(text *h, const cr_st_entry *e, size_t begin, size_t end) {
    char num[64];
    text_json_string(h, e->name);
    text_str(h, ":{\"dtype\":");
    text_json_string(h, e->dtype);
    text_str(h, ",\"shape\":[");
    for (int d = 0; d < e->ndim; d++) {
        snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", e->shape[d]);
        text_str(h, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", begin, end);
    text_str(h, num);
}

/* Metadata first, then tensors in the given order packed back to back;
 * spaces pad the header to a multiple of 8 so the data starts 8-aligned in
 * the file. */
static void build_header(text *h, const cr_st_entry *entries, int num_entries,
                         const char *const *meta, int num_meta) {
    text_str(h, "{");
    if (num_meta > 0) {
        text_str(h, "\"__metadata__\":{");
        for (int i = 0; i < num_meta; i++) {
            if (i) text_str(h, ",");
            text_json_string(h, meta[2 * i]);
            text_str(h, ":");
            text_json_string(h, meta[2 * i + 1]);
        }
        text_str(h, "}");
    }
    size_t offset = 0;
    for (int i = 0; i < num_entries; i++) {
        size_t bytes = entry_bytes(&entries[i]);
        if (i > 0 || num_meta > 0) text_str(h, ",");
        add_tensor(h, &entries[i], offset, offset + bytes);
        offset += bytes;
    }
    text_str(h, "}");
    while (h->len % 8) text_str(h, " ");
}

/* The file body, flushed to disk; the step that failed (errno says why) or
 * NULL. */
static const char *write_body(FILE *f, const text *header, const cr_st_entry *entries,
                              int num_entries) {
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)header->len >> (8 * i));
    if (fwrite(prefix, 1, 8, f) != 8) return "write";
    if (fwrite(header->s, 1, header->len, f) != header->len) return "write";
    for (int i = 0; i < num_entries; i++) {
        size_t bytes = entry_bytes(&entries[i]);
        if (bytes > 0 && fwrite(entries[i].data, 1, bytes, f) != bytes) return "write";
    }
    if (fflush(f) != 0) return "flush";
    if (fsync(fileno(f)) != 0) return "fsync";
    return NULL;
}

/* Temporary file in the same folder (rename is atomic only within one file
 * system), synced, then renamed over path. On failure it is removed. */
static int write_atomically(const char *path, const text *header, const cr_st_entry *entries,
                            int num_entries, char *err, size_t err_len) {
    size_t tmp_len = strlen(path) + 32;
    char *tmp = cr_malloc(tmp_len, "safetensors temp path");
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fail(err, err_len, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    const char *failed = write_body(f, header, entries, num_entries);
    int saved = errno;
    if (fclose(f) != 0 && !failed) {
        failed = "close";
        saved = errno;
    }
    if (!failed && rename(tmp, path) != 0) {
        failed = "rename";
        saved = errno;
    }
    if (failed) {
        fail(err, err_len, "%s of %s failed: %s", failed, tmp, strerror(saved));
        remove(tmp);
    }
    free(tmp);
    return failed ? -1 : 0;
}

int cr_safetensors_write(const char *path, const cr_st_entry *entries, int num_entries,
                         const char *const *meta, int num_meta, char *err, size_t err_len) {
    if (check_entries(entries, num_entries, meta, num_meta, err, err_len)) return -1;
    text header = {0};
    build_header(&header, entries, num_entries, meta, num_meta);
    int rc = write_atomically(path, &header, entries, num_entries, err, err_len);
    free(header.s);
    return rc;
}
