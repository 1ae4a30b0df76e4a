/* md5: RFC 1321 message digest, for checking downloaded archives.
 *
 * MD5 is broken for security; here it only detects a damaged or wrong
 * download, against the digest the CIFAR-10 site publishes. Incremental so a
 * 170 MB archive is hashed in fixed memory. */
#ifndef CRESNET_DATA_MD5_H
#define CRESNET_DATA_MD5_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[4];
    uint64_t bytes;    /* message length so far */
    uint8_t block[64]; /* pending input, bytes % 64 of it valid */
} cr_md5;

void cr_md5_init(cr_md5 *m);
void cr_md5_update(cr_md5 *m, const void *data, size_t n);
/* Pads, finishes and writes the 16-byte digest; m is spent afterwards. */
void cr_md5_final(cr_md5 *m, uint8_t digest[16]);
/* hex: 32 lowercase hex digits and a terminating zero. */
void cr_md5_hex(const uint8_t digest[16], char hex[33]);

#endif
