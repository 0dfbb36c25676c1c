/* Private to the store: the backends' ops tables and the pieces of the S3
 * backend that are pure functions (URL parsing, credentials, canonical
 * query strings, the ListObjects parser, the retry policy), exposed so
 * tests/unit/test-store.c can check them without a server. Nothing
 * outside src/store*.c and the store tests includes this. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

extern const struct store_ops store_file_ops;
extern const struct store_ops store_s3_ops;

/* How store.c calls a backend: keys are checked first (the single calls
 * only ever see valid keys); a batch call handles the items whose result
 * is 0 on entry and skips those store.c already failed (-EINVAL), and its
 * return value is ignored in favour of the first failed item. */

/* A list prefix: "" or a key prefix ("images/", "blocks/ab"), no "." or
 * ".." component, no leading or doubled '/'. */
bool store_prefix_is_valid(const char *prefix);

/* Sorts keys (a strv of n) and their mtimes (may be NULL) together by key. */
void store_sort_keys(char **keys, int64_t *mtimes, size_t n);

/* s3://BUCKET[/PREFIX][?endpoint=URL&region=R], with $INGOT_S3_ENDPOINT,
 * $AWS_REGION and $AWS_DEFAULT_REGION as the fallbacks. prefix is NULL or
 * has no leading or trailing '/'; endpoint has no trailing '/'. */
struct s3_url {
        char *bucket;
        char *prefix;
        char *endpoint;
        char *region;
};
void s3_url_done(struct s3_url *u);
/* -EINVAL (logged) for a malformed URL. */
int s3_url_parse(const char *url, struct s3_url *ret);

/* Secrets: freed with s3_credentials_done(), which wipes them first. */
struct s3_credentials {
        char *access_key;
        char *secret_key;
        char *session_token; /* NULL when none */
};
void s3_credentials_done(struct s3_credentials *c);
/* From $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY/$AWS_SESSION_TOKEN, else
 * from $AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials), section
 * $AWS_PROFILE ("default"). -EACCES (logged, naming where it looked, never
 * a secret) when none are found. */
int s3_credentials_load(struct s3_credentials *ret);

/* Percent-encodes s once as S3 expects in paths and query strings:
 * A-Za-z0-9-._~ stay, everything else becomes %XX (upper-case hex); '/'
 * stays too when keep_slash. */
char *s3_uri_encode(const char *s, bool keep_slash);
/* pairs = { key, value, key, value, ..., NULL }: the canonical SigV4 query
 * string, which is what curl 7.88 signs as given: sorted by key (then
 * value), each encoded, every key followed by '=' even with an empty value. */
char *s3_query_build(const char *const *pairs);

/* One page of a ListObjectsV2 (or v1) answer. keys is a strv. */
struct s3_list_page {
        char **keys;
        int64_t *mtimes;
        size_t n_keys;
        bool truncated;
        char *next_token; /* NextContinuationToken, else NextMarker; NULL when absent */
};
void s3_list_page_done(struct s3_list_page *p);
/* -EBADMSG when the document is not a ListBucketResult. */
int s3_list_parse(const char *xml, size_t size, struct s3_list_page *ret);
/* The text of the first <name>…</name> within [xml, xml+size), unescaped,
 * or NULL (also on -ENOMEM). */
char *s3_xml_element(const char *xml, size_t size, const char *name);
/* Replaces the five XML entities and &#N;/&#xN; (as UTF-8) in place;
 * -EBADMSG for an unknown or malformed one. */
int s3_xml_unescape(char *s);
/* "2023-04-05T06:07:08.000Z" -> seconds since the epoch; -EINVAL if malformed. */
int s3_parse_time(const char *s, int64_t *ret);

/* The retry policy (AWS SDK "standard" mode, tightened). */
enum s3_verdict {
        S3_VERDICT_OK,
        S3_VERDICT_TRANSIENT, /* retry after a backoff, within the budget */
        S3_VERDICT_PERMANENT, /* fail now */
};
/* curl_code is a CURLcode (int here so the header needs no curl.h);
 * status the HTTP status (0 when there was none); code the S3 error code
 * from the body, or NULL. */
enum s3_verdict s3_classify(int curl_code, long status, const char *code);
/* Full jitter: a uniform delay in [0, min(cap_ms, base_ms * 2^attempt)]
 * milliseconds, in microseconds. attempt counts from 0 (the delay before
 * the first retry). *seed is the generator's state. */
uint64_t s3_backoff_usec(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t *seed);

#define S3_MAX_ATTEMPTS 6                        /* per request: the first try and 5 retries */
#define S3_BUDGET_RETRIES 200                    /* per call (one single request or one batch) */
#define S3_BUDGET_USEC (UINT64_C(120) * 1000000) /* per call, from its first retry */
#define S3_RETRY_BASE_MS 200
#define S3_RETRY_CAP_MS 5000
#define S3_CONNECT_TIMEOUT_SEC 10
#define S3_STALL_TIMEOUT_SEC 30
#define S3_DEFAULT_JOBS 8
