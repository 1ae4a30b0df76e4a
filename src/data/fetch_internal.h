/* fetch internals shared with tests/data/test_fetch.c: the download URL as a
 * parameter, so a test can point it at a local port that refuses connections
 * instead of contacting the real host. */
#ifndef CRESNET_DATA_FETCH_INTERNAL_H
#define CRESNET_DATA_FETCH_INTERNAL_H

/* cr_data_fetch with the URL to download from (when from_file is NULL). */
int cr_data_fetch_url(const char *dir, const char *from_file, const char *expected_md5,
                      const char *url);

#endif
