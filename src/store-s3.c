/* Owns the s3:// store: any S3-compatible object store, path-style
 * (ENDPOINT/BUCKET/PREFIX/KEY), signed by libcurl's CURLOPT_AWS_SIGV4.
 *
 * libcurl 7.88.1 signs what it is given, so every request is built in the
 * form SigV4 wants (reference/tech.md §1.1): x-amz-content-sha256 carries
 * the real SHA-256 of the body (7.88 would otherwise sign the empty
 * body's), query strings are emitted sorted with "key=" and encoded once,
 * keys are percent-encoded once, no empty "Name:" header is ever added
 * (7.88 signs those too), the session token is a header we add, and the
 * provider string names all four fields. Curl signs at send time, so a
 * retried request carries a fresh x-amz-date.
 *
 * Every request goes through one curl multi handle per store (connections
 * are reused across calls), with at most `jobs` transfers in flight. A
 * transient failure (5xx, throttling, a reset or stalled connection) is
 * retried after a full-jitter exponential backoff, scheduled by time so
 * the other transfers go on meanwhile; a permanent one fails its request
 * at once. The retry budget: at most S3_MAX_ATTEMPTS (6) attempts per
 * request, and per call (one request, or one whole batch) at most
 * S3_BUDGET_RETRIES (200) retries and S3_BUDGET_USEC (120 s) from the
 * first retry; once the budget is spent, or one request has used all its
 * attempts, failures are final and requests not yet sent are not sent.
 *
 * Credentials live in two strings (USERPWD and the token header) that go
 * to curl and nowhere else: no verbose mode, no debug callback, and no
 * message prints a header or a credential. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <ini.h>
#include <openssl/evp.h>

#include "shared/log.h"
#include "shared/strv.h"
#include "store-internal.h"
#include "store.h"

/* Bodies of anything but an object GET (errors, list pages) are capped. */
#define S3_SMALL_BODY_MAX (UINT64_C(16) << 20)
/* Failures logged one by one in a batch before they are only counted. */
#define S3_LOG_FAILURES_MAX 10

static const char *strempty(const char *s)
{
        return s ? s : "";
}

/* ---- URL ------------------------------------------------------------- */

void s3_url_done(struct s3_url *u)
{
        u->bucket = x_free(u->bucket);
        u->prefix = x_free(u->prefix);
        u->endpoint = x_free(u->endpoint);
        u->region = x_free(u->region);
}

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Percent-decodes s[0..len); NULL when malformed or on ENOMEM. */
static char *percent_decode(const char *s, size_t len)
{
        char *d = malloc(len + 1), *o = d;

        if (!d)
                return NULL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] != '%') {
                        *o++ = s[i];
                        continue;
                }
                if (i + 2 >= len) {
                        free(d);
                        return NULL;
                }
                int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
                if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                        free(d);
                        return NULL;
                }
                *o++ = (char)(h << 4 | l);
                i += 2;
        }
        *o = '\0';
        return d;
}

static bool bucket_is_valid(const char *b)
{
        size_t len = strlen(b);

        /* S3's rules, plus upper case and '_' that older and other stores allow */
        if (len < 3 || len > 63 || b[0] == '.' || b[0] == '-' || b[len - 1] == '.' || b[len - 1] == '-')
                return false;
        for (const char *p = b; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr(".-_", *p)))
                        return false;
        return !strstr(b, "..");
}

static bool region_is_valid(const char *r)
{
        if (!*r || strlen(r) > 64)
                return false;
        for (const char *p = r; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return false;
        return true;
}

/* http(s)://HOST[:PORT][/PATH], no credentials, query or fragment; the
 * trailing '/' is dropped. */
static int endpoint_normalize(const char *e, char **ret)
{
        const char *host;
        size_t len;

        if (strncmp(e, "https://", 8) == 0)
                host = e + 8;
        else if (strncmp(e, "http://", 7) == 0)
                host = e + 7;
        else
                return -EINVAL;
        len = strcspn(host, "/");
        if (len == 0 || memchr(host, '@', len) || strpbrk(e, "?# \t\r\n"))
                return -EINVAL;
        const char *colon = memrchr(host, ':', len);
        if (colon && host[0] != '[') { /* a port: digits, not empty */
                size_t digits = len - (size_t)(colon - host) - 1;

                if (digits == 0 || digits > 5 || strspn(colon + 1, "0123456789") < digits)
                        return -EINVAL;
        }
        len = strlen(e);
        while (len > 0 && e[len - 1] == '/')
                len--;
        *ret = strndup(e, len);
        return *ret ? 0 : -ENOMEM;
}

static const char *getenv_nonempty(const char *name)
{
        const char *v = getenv(name);

        return v && *v ? v : NULL;
}

/* url for messages: a "user:password@" after any "://" becomes "***@". */
static char *url_redact(const char *url)
{
        char *r = strdup(url);

        if (!r)
                return NULL;
        for (char *p = strstr(r, "://"); p; p = strstr(p, "://")) {
                char *host = p + 3, *end = host + strcspn(host, "/?#&"), *at = memrchr(host, '@', (size_t)(end - host));

                if (at && at - host >= 3) {
                        memcpy(host, "***", 3);
                        memmove(host + 3, at, strlen(at) + 1);
                } else if (at) /* shorter than the mask: drop it */
                        memmove(host, at + 1, strlen(at + 1) + 1);
                p = host;
        }
        return r;
}

int s3_url_parse(const char *url_given, struct s3_url *ret)
{
        _cleanup_(s3_url_done) struct s3_url u = { 0 };
        _cleanup_free_ char *endpoint = NULL, *region = NULL, *url = NULL;
        const char *p, *q, *e;
        size_t len;
        int r;

        /* every message below names the URL, never a credential in it */
        url = url_redact(url_given);
        if (!url)
                return log_error_errno(-ENOMEM, "out of memory");

        if (strncmp(url_given, "s3://", 5) != 0)
                return log_error_errno(-EINVAL, "store '%s' is not an s3:// URL", url);
        p = url_given + 5;
        if (strchr(p, '#'))
                return log_error_errno(-EINVAL, "store '%s': a fragment ('#') is not allowed", url);
        q = strchr(p, '?');

        len = strcspn(p, "/?");
        u.bucket = strndup(p, len);
        if (!u.bucket)
                return log_error_errno(-ENOMEM, "out of memory");
        if (!bucket_is_valid(u.bucket))
                return log_error_errno(-EINVAL, "store '%s': invalid bucket name '%s'", url, u.bucket);
        p += len;

        if (*p == '/') {
                const char *end = q ? q : p + strlen(p);

                while (p < end && *p == '/')
                        p++;
                while (end > p && end[-1] == '/')
                        end--;
                if (end > p) {
                        u.prefix = strndup(p, (size_t)(end - p));
                        if (!u.prefix)
                                return log_error_errno(-ENOMEM, "out of memory");
                        if (!store_key_is_valid(u.prefix))
                                return log_error_errno(-EINVAL, "store '%s': invalid prefix '%s'", url, u.prefix);
                }
        }

        for (const char *a = q ? q + 1 : NULL; a && *a;) {
                size_t alen = strcspn(a, "&");
                const char *eq = memchr(a, '=', alen);
                _cleanup_free_ char *value = NULL;
                char **slot;

                if (alen == 0) {
                        a++;
                        continue;
                }
                if (!eq)
                        return log_error_errno(-EINVAL, "store '%s': '%.*s' is not KEY=VALUE", url, (int)alen, a);
                if ((size_t)(eq - a) == 8 && strncmp(a, "endpoint", 8) == 0)
                        slot = &endpoint;
                else if ((size_t)(eq - a) == 6 && strncmp(a, "region", 6) == 0)
                        slot = &region;
                else
                        return log_error_errno(-EINVAL,
                                               "store '%s': unknown parameter '%.*s' (expected endpoint= or region=)",
                                               url, (int)(eq - a), a);
                value = percent_decode(eq + 1, alen - (size_t)(eq - a) - 1);
                if (!value || !*value)
                        return log_error_errno(-EINVAL, "store '%s': malformed value of '%.*s'", url, (int)(eq - a), a);
                free(*slot);
                *slot = TAKE_PTR(value);
                a += alen;
        }

        if (region)
                u.region = TAKE_PTR(region);
        else if ((e = getenv_nonempty("AWS_REGION")) || (e = getenv_nonempty("AWS_DEFAULT_REGION")))
                u.region = strdup(e);
        else
                u.region = strdup("us-east-1");
        if (!u.region)
                return log_error_errno(-ENOMEM, "out of memory");
        if (!region_is_valid(u.region))
                return log_error_errno(-EINVAL, "store '%s': invalid region '%s'", url, u.region);

        e = endpoint ? endpoint : getenv_nonempty("INGOT_S3_ENDPOINT");
        if (e) {
                r = endpoint_normalize(e, &u.endpoint);
                if (r == -ENOMEM)
                        return log_error_errno(r, "out of memory");
                if (r < 0)
                        /* print the endpoint only up to its host: it might hold a user:password@ */
                        return log_error_errno(r,
                                               "store '%s': the endpoint%s must be http(s)://HOST[:PORT][/PATH] "
                                               "without credentials, query or fragment",
                                               url, endpoint ? "" : " in $INGOT_S3_ENDPOINT");
        } else if (asprintf(&u.endpoint, "https://s3.%s.amazonaws.com", u.region) < 0) {
                u.endpoint = NULL;
                return log_error_errno(-ENOMEM, "out of memory");
        }

        *ret = u;
        u = (struct s3_url){ 0 };
        return 0;
}

/* ---- credentials ----------------------------------------------------- */

static void free_secret(char **s)
{
        if (*s) {
                explicit_bzero(*s, strlen(*s));
                *s = x_free(*s);
        }
}

void s3_credentials_done(struct s3_credentials *c)
{
        free_secret(&c->access_key);
        free_secret(&c->secret_key);
        free_secret(&c->session_token);
}

struct profile_parse {
        const char *profile;
        bool found;
        struct s3_credentials c;
        bool oom;
};

static int credentials_handler(void *user, const char *section, const char *name, const char *value)
{
        struct profile_parse *p = user;
        char **slot;

        if (!streq(section, p->profile))
                return 1;
        p->found = true;
        if (strcasecmp(name, "aws_access_key_id") == 0)
                slot = &p->c.access_key;
        else if (strcasecmp(name, "aws_secret_access_key") == 0)
                slot = &p->c.secret_key;
        else if (strcasecmp(name, "aws_session_token") == 0)
                slot = &p->c.session_token;
        else
                return 1;
        free_secret(slot);
        *slot = strdup(value);
        if (!*slot)
                p->oom = true;
        return 1; /* a line inih cannot parse is reported by its number only, never its text */
}

int s3_credentials_load(struct s3_credentials *ret)
{
        _cleanup_(s3_credentials_done) struct s3_credentials c = { 0 };
        _cleanup_free_ char *path = NULL;
        const char *ak = getenv_nonempty("AWS_ACCESS_KEY_ID"), *sk = getenv_nonempty("AWS_SECRET_ACCESS_KEY");
        const char *tok = getenv_nonempty("AWS_SESSION_TOKEN"), *e;
        struct profile_parse p = { 0 };
        int r;

        if (ak || sk) {
                if (!ak || !sk)
                        return log_error_errno(-EACCES, "no S3 credentials: $%s is set but $%s is not",
                                               ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                                               ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
                c.access_key = strdup(ak);
                c.secret_key = strdup(sk);
                c.session_token = tok ? strdup(tok) : NULL;
                if (!c.access_key || !c.secret_key || (tok && !c.session_token))
                        return log_error_errno(-ENOMEM, "out of memory");
                *ret = c;
                c = (struct s3_credentials){ 0 };
                return 0;
        }

        if ((e = getenv_nonempty("AWS_SHARED_CREDENTIALS_FILE")))
                path = strdup(e);
        else if ((e = getenv_nonempty("HOME"))) {
                if (asprintf(&path, "%s/.aws/credentials", e) < 0)
                        path = NULL;
        } else
                return log_error_errno(-EACCES, "no S3 credentials: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY "
                                                "are not set and neither are $AWS_SHARED_CREDENTIALS_FILE or $HOME");
        if (!path)
                return log_error_errno(-ENOMEM, "out of memory");
        p.profile = getenv_nonempty("AWS_PROFILE") ?: "default";

        r = ini_parse(path, credentials_handler, &p);
        if (p.oom) {
                s3_credentials_done(&p.c);
                return log_error_errno(-ENOMEM, "out of memory");
        }
        if (r == -1) {
                s3_credentials_done(&p.c);
                return log_error_errno(-EACCES,
                                       "no S3 credentials: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY are not set "
                                       "and '%s' cannot be read",
                                       path);
        }
        if (r != 0) {
                s3_credentials_done(&p.c);
                return log_error_errno(-EACCES, "no S3 credentials: '%s' is malformed at line %d", path, r);
        }
        if (!p.found || !p.c.access_key || !p.c.secret_key) {
                bool found = p.found;

                s3_credentials_done(&p.c);
                if (!found)
                        return log_error_errno(-EACCES,
                                               "no S3 credentials: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY are "
                                               "not set and '%s' has no profile '%s'",
                                               path, p.profile);
                return log_error_errno(-EACCES,
                                       "no S3 credentials: profile '%s' in '%s' lacks aws_access_key_id or "
                                       "aws_secret_access_key",
                                       p.profile, path);
        }
        *ret = p.c;
        return 0;
}

/* ---- encoding -------------------------------------------------------- */

char *s3_uri_encode(const char *s, bool keep_slash)
{
        static const char hex[] = "0123456789ABCDEF";
        char *d = malloc(strlen(s) * 3 + 1), *o = d;

        if (!d)
                return NULL;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    strchr("-._~", *p) || (keep_slash && *p == '/'))
                        *o++ = (char)*p;
                else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = '\0';
        return d;
}

struct query_pair {
        char *key, *value; /* encoded */
};

static int cmp_query_pair(const void *a, const void *b)
{
        const struct query_pair *x = a, *y = b;
        int c = strcmp(x->key, y->key);

        return c ? c : strcmp(x->value, y->value);
}

char *s3_query_build(const char *const *pairs)
{
        struct query_pair *v;
        size_t n = 0, len = 1;
        char *out = NULL, *o;

        while (pairs[2 * n])
                n++;
        v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                v[i].key = s3_uri_encode(pairs[2 * i], false);
                v[i].value = s3_uri_encode(pairs[2 * i + 1] ?: "", false);
                if (!v[i].key || !v[i].value)
                        goto finish;
                len += strlen(v[i].key) + strlen(v[i].value) + 2;
        }
        /* sorted after encoding: SigV4 sorts the encoded names by byte */
        qsort(v, n, sizeof(*v), cmp_query_pair);
        out = o = malloc(len);
        if (!out)
                goto finish;
        *o = '\0';
        for (size_t i = 0; i < n; i++)
                o += sprintf(o, "%s%s=%s", i ? "&" : "", v[i].key, v[i].value);
finish:
        for (size_t i = 0; i < n; i++) {
                free(v[i].key);
                free(v[i].value);
        }
        free(v);
        return out;
}

/* ---- XML ------------------------------------------------------------- */

static int put_utf8(char **o, unsigned long cp)
{
        char *d = *o;

        if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return -EBADMSG;
        if (cp < 0x80)
                *d++ = (char)cp;
        else if (cp < 0x800) {
                *d++ = (char)(0xC0 | cp >> 6);
                *d++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
                *d++ = (char)(0xE0 | cp >> 12);
                *d++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *d++ = (char)(0x80 | (cp & 0x3F));
        } else {
                *d++ = (char)(0xF0 | cp >> 18);
                *d++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *d++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *d++ = (char)(0x80 | (cp & 0x3F));
        }
        *o = d;
        return 0;
}

int s3_xml_unescape(char *s)
{
        static const struct {
                const char *name;
                char c;
        } entities[] = { { "lt", '<' }, { "gt", '>' }, { "amp", '&' }, { "quot", '"' }, { "apos", '\'' } };
        char *o = s;

        /* every entity is at least as long as what it stands for, so in place is safe */
        for (const char *p = s; *p;) {
                const char *semi;
                size_t len;
                bool done = false;

                if (*p != '&') {
                        *o++ = *p++;
                        continue;
                }
                semi = strchr(p, ';');
                if (!semi || semi - p > 12)
                        return -EBADMSG;
                len = (size_t)(semi - p - 1);
                for (size_t i = 0; i < ELEMENTSOF(entities); i++)
                        if (strlen(entities[i].name) == len && strncmp(p + 1, entities[i].name, len) == 0) {
                                *o++ = entities[i].c;
                                done = true;
                                break;
                        }
                if (!done) {
                        unsigned long cp;
                        char *end;

                        if (len < 2 || p[1] != '#')
                                return -EBADMSG;
                        errno = 0;
                        if (p[2] == 'x' || p[2] == 'X') {
                                if (len < 3)
                                        return -EBADMSG;
                                cp = strtoul(p + 3, &end, 16);
                        } else
                                cp = strtoul(p + 2, &end, 10);
                        if (errno || end != semi || p[2] == '-' || p[2] == '+' || p[3] == '-' || p[3] == '+' ||
                            put_utf8(&o, cp) < 0)
                                return -EBADMSG;
                }
                p = semi + 1;
        }
        *o = '\0';
        return 0;
}

/* Finds <name>…</name> (or <name/>) in [xml, end); sets the text's range. */
static bool xml_find(const char *xml, const char *end, const char *name, const char **ret_begin, const char **ret_end,
                     const char **ret_after)
{
        size_t nl = strlen(name);

        for (const char *p = xml; p < end; p++) {
                const char *t;

                p = memchr(p, '<', (size_t)(end - p));
                if (!p)
                        return false;
                t = p + 1;
                if ((size_t)(end - t) < nl + 1 || strncmp(t, name, nl) != 0)
                        continue;
                t += nl;
                if (*t == '/' && t + 1 < end && t[1] == '>') { /* <name/> */
                        *ret_begin = *ret_end = t;
                        *ret_after = t + 2;
                        return true;
                }
                if (*t != '>' && *t != ' ')
                        continue;
                t = memchr(t, '>', (size_t)(end - t));
                if (!t)
                        return false;
                t++;
                for (const char *c = t; c < end; c++) {
                        c = memchr(c, '<', (size_t)(end - c));
                        if (!c)
                                return false;
                        if ((size_t)(end - c) >= nl + 3 && c[1] == '/' && strncmp(c + 2, name, nl) == 0 &&
                            c[2 + nl] == '>') {
                                *ret_begin = t;
                                *ret_end = c;
                                *ret_after = c + 3 + nl;
                                return true;
                        }
                }
                return false;
        }
        return false;
}

static char *xml_text(const char *begin, const char *end)
{
        char *s = strndup(begin, (size_t)(end - begin));

        if (s && s3_xml_unescape(s) < 0)
                s = x_free(s);
        return s;
}

char *s3_xml_element(const char *xml, size_t size, const char *name)
{
        const char *b, *e, *a;

        if (!xml || !xml_find(xml, xml + size, name, &b, &e, &a))
                return NULL;
        return xml_text(b, e);
}

int s3_parse_time(const char *s, int64_t *ret)
{
        struct tm tm = { 0 };
        const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        time_t t;

        if (!p)
                return -EINVAL;
        if (*p == '.') /* fractions of a second */
                for (p++; *p >= '0' && *p <= '9'; p++)
                        ;
        if (!streq(p, "Z") && !streq(p, "+00:00"))
                return -EINVAL;
        t = timegm(&tm);
        if (t == (time_t)-1)
                return -EINVAL;
        *ret = (int64_t)t;
        return 0;
}

void s3_list_page_done(struct s3_list_page *p)
{
        p->keys = strv_free(p->keys);
        p->mtimes = x_free(p->mtimes);
        p->n_keys = 0;
        p->next_token = x_free(p->next_token);
}

int s3_list_parse(const char *xml, size_t size, struct s3_list_page *ret)
{
        _cleanup_(s3_list_page_done) struct s3_list_page page = { 0 };
        const char *end = xml + size, *b, *e, *after, *top_b, *top_e;
        _cleanup_free_ char *truncated = NULL;
        size_t alloc = 0;

        if (!xml || !xml_find(xml, end, "ListBucketResult", &top_b, &top_e, &after))
                return -EBADMSG;

        for (const char *p = top_b; xml_find(p, top_e, "Contents", &b, &e, &after); p = after) {
                const char *kb, *ke, *ka;
                _cleanup_free_ char *key = NULL, *mtime = NULL;
                int64_t t = 0;

                if (!xml_find(b, e, "Key", &kb, &ke, &ka))
                        return -EBADMSG;
                key = xml_text(kb, ke);
                if (!key || !*key)
                        return -EBADMSG;
                mtime = s3_xml_element(b, (size_t)(e - b), "LastModified");
                if (mtime && s3_parse_time(mtime, &t) < 0)
                        return -EBADMSG;

                if (page.n_keys + 1 >= alloc) {
                        size_t a = alloc ? alloc * 2 : 64;
                        char **k = reallocarray(page.keys, a, sizeof(*k));

                        if (!k)
                                return -ENOMEM;
                        page.keys = k;
                        int64_t *m = reallocarray(page.mtimes, a, sizeof(*m));
                        if (!m)
                                return -ENOMEM;
                        page.mtimes = m;
                        alloc = a;
                }
                page.keys[page.n_keys] = TAKE_PTR(key);
                page.mtimes[page.n_keys++] = t;
                page.keys[page.n_keys] = NULL;
        }

        /* Contents come first in S3's answers but search outside them anyway:
         * a key could be named "IsTruncated" only inside <Key>, which is text */
        truncated = s3_xml_element(top_b, (size_t)(top_e - top_b), "IsTruncated");
        page.truncated = truncated && streq(truncated, "true");
        page.next_token = s3_xml_element(top_b, (size_t)(top_e - top_b), "NextContinuationToken");
        if (!page.next_token)
                page.next_token = s3_xml_element(top_b, (size_t)(top_e - top_b), "NextMarker");
        if (!page.keys) {
                page.keys = calloc(1, sizeof(*page.keys));
                if (!page.keys)
                        return -ENOMEM;
        }
        *ret = page;
        page = (struct s3_list_page){ 0 };
        return 0;
}

/* ---- retry policy ---------------------------------------------------- */

enum s3_verdict s3_classify(int curl_code, long status, const char *code)
{
        static const char *const transient_codes[] = {
                "SlowDown",           "RequestTimeout",          "InternalError",
                "ServiceUnavailable", "RequestLimitExceeded",    "TooManyRequestsException",
                "RequestThrottled",   "PriorRequestNotComplete", "BandwidthLimitExceeded",
        };

        switch ((CURLcode)curl_code) {
        case CURLE_OK:
                break;
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
                return S3_VERDICT_TRANSIENT;
        default:
                return S3_VERDICT_PERMANENT;
        }
        if (status >= 200 && status < 300)
                return S3_VERDICT_OK;
        if (code) {
                if (strncmp(code, "Throttling", 10) == 0)
                        return S3_VERDICT_TRANSIENT;
                for (size_t i = 0; i < ELEMENTSOF(transient_codes); i++)
                        if (streq(code, transient_codes[i]))
                                return S3_VERDICT_TRANSIENT;
        }
        if (status == 500 || status == 502 || status == 503 || status == 504 || status == 429)
                return S3_VERDICT_TRANSIENT;
        return S3_VERDICT_PERMANENT;
}

uint64_t s3_backoff_usec(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t *seed)
{
        uint64_t limit = base_ms, x;

        for (unsigned i = 0; i < attempt && limit < cap_ms; i++)
                limit *= 2;
        if (limit > cap_ms)
                limit = cap_ms;
        /* xorshift64*: jitter needs spread, not secrecy */
        x = *seed ? *seed : UINT64_C(0x9E3779B97F4A7C15);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *seed = x;
        x *= UINT64_C(2685821657736338717);
        return (x >> 11) % (limit * 1000 + 1);
}

/* ---- the store -------------------------------------------------------- */

struct s3_store {
        struct store base; /* first, so a struct store * is a struct s3_store * */
        struct s3_url u;
        char *bucket_url;   /* ENDPOINT/BUCKET, encoded */
        char *sigv4;        /* "aws:amz:REGION:s3" */
        char *userpwd;      /* "ACCESS:SECRET": a secret, for curl only */
        char *token_header; /* "x-amz-security-token: …": a secret, or NULL */
        bool insecure;
        unsigned jobs;
        long stall_sec;
        unsigned retry_base_ms;
        uint64_t seed;
        CURLM *multi;
        CURL **idle; /* easy handles not in use */
        size_t n_idle;
        /* the budget of the current call */
        unsigned budget_retries;
        uint64_t budget_start;
        bool budget_spent;
};

static struct s3_store *S3(struct store *s)
{
        return (struct s3_store *)s;
}

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void s3_close(struct store *st)
{
        struct s3_store *s = S3(st);

        for (size_t i = 0; i < s->n_idle; i++)
                curl_easy_cleanup(s->idle[i]);
        free(s->idle);
        if (s->multi)
                curl_multi_cleanup(s->multi);
        s3_url_done(&s->u);
        free(s->bucket_url);
        free(s->sigv4);
        free_secret(&s->userpwd);
        free_secret(&s->token_header);
        free(s);
        curl_global_cleanup();
}

static unsigned env_unsigned(const char *name, unsigned def, unsigned min, unsigned max)
{
        const char *v = getenv_nonempty(name);
        unsigned long n;
        char *end;

        if (!v)
                return def;
        errno = 0;
        n = strtoul(v, &end, 10);
        if (errno || *end || n < min || n > max || *v == '-') {
                log_warning("ignoring $%s='%s' (expected %u..%u)", name, v, min, max);
                return def;
        }
        return (unsigned)n;
}

static int s3_open(const char *url, const struct store_options *o, struct store **ret)
{
        _cleanup_(s3_credentials_done) struct s3_credentials c = { 0 };
        _cleanup_free_ char *bucket = NULL;
        struct s3_store *s;
        int r;

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return log_error_errno(-EIO, "cannot initialise libcurl");
        s = calloc(1, sizeof(*s));
        if (!s) {
                curl_global_cleanup();
                return log_error_errno(-ENOMEM, "out of memory");
        }
        r = s3_url_parse(url, &s->u);
        if (r < 0)
                goto fail;
        r = s3_credentials_load(&c);
        if (r < 0)
                goto fail;

        s->insecure = o->insecure;
        s->jobs = o->jobs ? o->jobs : S3_DEFAULT_JOBS;
        s->stall_sec = env_unsigned("INGOT_S3_STALL_TIMEOUT", S3_STALL_TIMEOUT_SEC, 1, 3600);
        s->retry_base_ms = env_unsigned("INGOT_S3_RETRY_BASE_MS", S3_RETRY_BASE_MS, 1, S3_RETRY_CAP_MS);
        s->seed = now_usec() ^ ((uint64_t)getpid() << 32);

        r = -ENOMEM;
        bucket = s3_uri_encode(s->u.bucket, false);
        if (!bucket || asprintf(&s->bucket_url, "%s/%s", s->u.endpoint, bucket) < 0) {
                s->bucket_url = NULL;
                goto oom;
        }
        if (asprintf(&s->sigv4, "aws:amz:%s:s3", s->u.region) < 0) {
                s->sigv4 = NULL;
                goto oom;
        }
        if (asprintf(&s->userpwd, "%s:%s", c.access_key, c.secret_key) < 0) {
                s->userpwd = NULL;
                goto oom;
        }
        if (c.session_token && asprintf(&s->token_header, "x-amz-security-token: %s", c.session_token) < 0) {
                s->token_header = NULL;
                goto oom;
        }
        s->idle = calloc(s->jobs, sizeof(*s->idle));
        s->multi = curl_multi_init();
        if (!s->idle || !s->multi)
                goto oom;
        curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)s->jobs);
        curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->jobs);
        curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->jobs);
        if (s->insecure)
                log_warning("store '%s': TLS certificates are not verified (--insecure)", url);
        *ret = &s->base;
        return 0;
oom:
        r = log_error_errno(-ENOMEM, "out of memory");
fail:
        s3_close(&s->base);
        return r;
}

/* ---- requests --------------------------------------------------------- */

enum s3_method { S3_GET, S3_PUT, S3_HEAD, S3_DELETE, S3_LIST };

static const char *const method_name[] = {
        [S3_GET] = "GET", [S3_PUT] = "PUT", [S3_HEAD] = "HEAD", [S3_DELETE] = "DELETE", [S3_LIST] = "list",
};

enum s3_state { REQ_QUEUED, REQ_RUNNING, REQ_WAITING, REQ_DONE };

struct s3_request {
        enum s3_method method;
        const char *key;  /* as the caller named it (for list: the prefix) */
        char *url;        /* built when first sent */
        char *query;      /* list: the canonical query */
        const char *body; /* PUT */
        size_t body_size, body_pos;
        struct curl_slist *headers;
        char *data; /* the response body */
        size_t size, alloc;
        enum s3_state state;
        unsigned attempts;
        uint64_t not_before;
        CURL *easy;
        char curl_error[CURL_ERROR_SIZE];
        char last_error[512]; /* what the last attempt ended with */
        char reason[384];     /* what that means, said before it */
        int result;           /* when REQ_DONE: 0, 1 (HEAD: present) or -errno */
        bool quiet_enoent;    /* GET: absent is an answer, not an error */
        const char *cond;     /* PUT/DELETE: "If-None-Match: *" or "If-Match: ETAG" (a header line) */
        uint64_t max;         /* GET: the largest body accepted; 0 = no limit */
        bool too_big;         /* the body went past max */
        char *etag;           /* the response's ETag, when asked (want_etag) */
        bool want_etag;
};

static void request_done(struct s3_request *q)
{
        free(q->url);
        free(q->query);
        curl_slist_free_all(q->headers);
        free(q->data);
        free(q->etag);
}

/* Keeps the ETag header of a response (of the last attempt). */
static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
        struct s3_request *q = userdata;
        size_t n = size * nitems, k = strlen("etag:");

        if (n > k && strncasecmp(buf, "etag:", k) == 0) {
                const char *v = buf + k;
                size_t len = n - k;

                while (len > 0 && (*v == ' ' || *v == '\t'))
                        v++, len--;
                while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
                        len--;
                free(q->etag);
                q->etag = strndup(v, len);
        }
        return n;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct s3_request *q = userdata;
        size_t n = size * nmemb;

        if (q->method != S3_GET && q->size + n > S3_SMALL_BODY_MAX)
                return 0; /* CURLE_WRITE_ERROR */
        if (q->max > 0 && q->size + n > q->max) {
                q->too_big = true;
                return 0;
        }
        if (q->size + n + 1 > q->alloc) {
                size_t a = q->alloc ? q->alloc : 16384;
                curl_off_t cl = -1;
                char *m;

                if (q->easy && q->alloc == 0 &&
                    curl_easy_getinfo(q->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl > 0 &&
                    (uint64_t)cl < SIZE_MAX / 2)
                        a = (size_t)cl + 1;
                while (a < q->size + n + 1)
                        a *= 2;
                m = realloc(q->data, a);
                if (!m)
                        return 0;
                q->data = m;
                q->alloc = a;
        }
        memcpy(q->data + q->size, ptr, n);
        q->size += n;
        q->data[q->size] = '\0';
        return n;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
        struct s3_request *q = userdata;
        size_t n = size * nitems;

        if (n > q->body_size - q->body_pos)
                n = q->body_size - q->body_pos;
        memcpy(buf, q->body + q->body_pos, n);
        q->body_pos += n;
        return n;
}

static int seek_cb(void *userdata, curl_off_t offset, int origin)
{
        struct s3_request *q = userdata;

        if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > q->body_size)
                return CURL_SEEKFUNC_CANTSEEK;
        q->body_pos = (size_t)offset;
        return CURL_SEEKFUNC_OK;
}

static int sha256_header(const void *data, size_t size, char **ret)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char md[32];
        char *h;

        if (!EVP_Digest(data, size, md, NULL, EVP_sha256(), NULL))
                return -EIO;
        h = malloc(strlen("x-amz-content-sha256: ") + 64 + 1);
        if (!h)
                return -ENOMEM;
        char *o = stpcpy(h, "x-amz-content-sha256: ");
        for (size_t i = 0; i < 32; i++) {
                *o++ = hex[md[i] >> 4];
                *o++ = hex[md[i] & 15];
        }
        *o = '\0';
        *ret = h;
        return 0;
}

/* The URL and headers, made once per request (they do not change between
 * attempts; the signature and date do, and curl makes those). */
static int request_prepare(struct s3_store *s, struct s3_request *q)
{
        _cleanup_free_ char *enc = NULL, *full = NULL, *hdr = NULL;
        struct curl_slist *l;
        int r;

        if (q->url)
                return 0;
        if (q->method == S3_LIST) {
                if (asprintf(&q->url, "%s?%s", s->bucket_url, q->query) < 0)
                        q->url = NULL;
        } else {
                if (s->u.prefix && asprintf(&full, "%s/%s", s->u.prefix, q->key) < 0)
                        return -ENOMEM;
                enc = s3_uri_encode(full ?: q->key, true);
                if (!enc || asprintf(&q->url, "%s/%s", s->bucket_url, enc) < 0)
                        q->url = NULL;
        }
        if (!q->url)
                return -ENOMEM;

        r = sha256_header(q->method == S3_PUT ? q->body : "", q->method == S3_PUT ? q->body_size : 0, &hdr);
        if (r < 0)
                return r;
        l = curl_slist_append(NULL, hdr);
        if (!l)
                return -ENOMEM;
        q->headers = l;
        if (s->token_header && !curl_slist_append(q->headers, s->token_header))
                return -ENOMEM;
        if (q->cond && !curl_slist_append(q->headers, q->cond))
                return -ENOMEM;
        return 0;
}

static CURL *easy_get(struct s3_store *s)
{
        if (s->n_idle > 0)
                return s->idle[--s->n_idle];
        return curl_easy_init();
}

static void easy_put(struct s3_store *s, CURL *e)
{
        curl_easy_reset(e); /* drops the pointers into the finished request */
        if (s->n_idle < s->jobs)
                s->idle[s->n_idle++] = e;
        else
                curl_easy_cleanup(e);
}

#define SETOPT(e, opt, val)                                                                                            \
        do {                                                                                                           \
                if (curl_easy_setopt((e), (opt), (val)) != CURLE_OK)                                                   \
                        return -EIO;                                                                                   \
        } while (0)

static int easy_setup(struct s3_store *s, struct s3_request *q, CURL *e)
{
        curl_easy_reset(e); /* keeps the connection and DNS caches */
        q->body_pos = 0;
        q->size = 0;
        q->curl_error[0] = '\0';

        SETOPT(e, CURLOPT_URL, q->url);
        SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(e, CURLOPT_PRIVATE, q);
        SETOPT(e, CURLOPT_NOSIGNAL, 1L);
        SETOPT(e, CURLOPT_ERRORBUFFER, q->curl_error);
        SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        SETOPT(e, CURLOPT_AWS_SIGV4, s->sigv4);
        SETOPT(e, CURLOPT_USERPWD, s->userpwd);
        SETOPT(e, CURLOPT_HTTPHEADER, q->headers);
        SETOPT(e, CURLOPT_CONNECTTIMEOUT, (long)S3_CONNECT_TIMEOUT_SEC);
        SETOPT(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        SETOPT(e, CURLOPT_LOW_SPEED_TIME, s->stall_sec);
        SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
        SETOPT(e, CURLOPT_SSL_VERIFYPEER, s->insecure ? 0L : 1L);
        SETOPT(e, CURLOPT_SSL_VERIFYHOST, s->insecure ? 0L : 2L);
        SETOPT(e, CURLOPT_WRITEFUNCTION, write_cb);
        SETOPT(e, CURLOPT_WRITEDATA, q);
        if (q->want_etag) {
                SETOPT(e, CURLOPT_HEADERFUNCTION, header_cb);
                SETOPT(e, CURLOPT_HEADERDATA, q);
        }

        switch (q->method) {
        case S3_GET:
        case S3_LIST:
                SETOPT(e, CURLOPT_HTTPGET, 1L);
                break;
        case S3_HEAD:
                SETOPT(e, CURLOPT_NOBODY, 1L);
                break;
        case S3_DELETE:
                SETOPT(e, CURLOPT_CUSTOMREQUEST, "DELETE");
                break;
        case S3_PUT:
                SETOPT(e, CURLOPT_UPLOAD, 1L);
                SETOPT(e, CURLOPT_READFUNCTION, read_cb);
                SETOPT(e, CURLOPT_READDATA, q);
                SETOPT(e, CURLOPT_SEEKFUNCTION, seek_cb);
                SETOPT(e, CURLOPT_SEEKDATA, q);
                SETOPT(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body_size);
                break;
        }
        return 0;
}

static int request_start(struct s3_store *s, struct s3_request *q)
{
        int r;

        r = request_prepare(s, q);
        if (r < 0)
                return r;
        q->easy = easy_get(s);
        if (!q->easy)
                return -ENOMEM;
        r = easy_setup(s, q, q->easy);
        if (r >= 0 && curl_multi_add_handle(s->multi, q->easy) != CURLM_OK)
                r = -EIO;
        if (r < 0) {
                easy_put(s, q->easy);
                q->easy = NULL;
                return r;
        }
        q->state = REQ_RUNNING;
        return 0;
}

/* Spends one retry of the call's budget, if any is left. */
static bool budget_take(struct s3_store *s)
{
        uint64_t now = now_usec();

        if (s->budget_spent)
                return false;
        if (s->budget_start == 0)
                s->budget_start = now;
        if (s->budget_retries >= S3_BUDGET_RETRIES || now - s->budget_start >= S3_BUDGET_USEC) {
                s->budget_spent = true;
                return false;
        }
        s->budget_retries++;
        return true;
}

static int curl_errno(CURLcode c)
{
        switch (c) {
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
                return -EHOSTUNREACH;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

static const char *request_what(struct s3_request *q, char *buf, size_t size)
{
        if (q->method == S3_LIST)
                snprintf(buf, size, "listing '%s'", q->key);
        else
                snprintf(buf, size, "%s '%s'", method_name[q->method], q->key);
        return buf;
}

/* Decides what a finished attempt means: done (ok or failed for good)
 * or to be retried. */
static void request_finish_attempt(struct s3_store *s, struct s3_request *q, CURLcode cres, bool *ret_retry,
                                   int *ret_log)
{
        _cleanup_free_ char *code = NULL, *message = NULL;
        long status = 0;
        enum s3_verdict v;
        int err;
        char what[256];

        *ret_retry = false;
        *ret_log = 0;
        q->attempts++;
        q->reason[0] = '\0';
        if (q->too_big) {
                q->result = -EFBIG;
                snprintf(q->last_error, sizeof(q->last_error), "larger than %llu bytes",
                         (unsigned long long)q->max);
                return;
        }
        if (cres == CURLE_OK)
                curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300 && q->size > 0) {
                code = s3_xml_element(q->data, q->size, "Code");
                message = s3_xml_element(q->data, q->size, "Message");
        }

        /* answers that are not errors for this method */
        if (cres == CURLE_OK && status == 404 && !streq_ptr(code, "NoSuchBucket")) {
                if (q->method == S3_HEAD || q->method == S3_DELETE) {
                        q->result = 0;
                        return;
                }
                if (q->method == S3_GET) {
                        q->result = -ENOENT;
                        *ret_log = q->quiet_enoent ? 0 : -ENOENT;
                        snprintf(q->last_error, sizeof(q->last_error), "no such object");
                        return;
                }
        }

        /* a condition that does not hold is an answer too; a conflict
         * with a concurrent conditional write (S3's 409
         * ConditionalRequestConflict) is worth another try */
        if (cres == CURLE_OK && q->cond && status == 412) {
                q->result = q->method == S3_PUT && strncmp(q->cond, "If-None-Match", 13) == 0 ? -EEXIST : -ESTALE;
                return;
        }
        v = s3_classify(cres, status, code);
        if (cres == CURLE_OK && q->cond && status == 409)
                v = S3_VERDICT_TRANSIENT;
        if (v == S3_VERDICT_OK) {
                q->result = q->method == S3_HEAD ? 1 : 0;
                return;
        }

        if (cres != CURLE_OK)
                snprintf(q->last_error, sizeof(q->last_error), "%s",
                         *q->curl_error ? q->curl_error : curl_easy_strerror(cres));
        else
                snprintf(q->last_error, sizeof(q->last_error), "HTTP %ld%s%s%s%s", status, code ? " " : "",
                         strempty(code), message ? ": " : "", strempty(message));

        if (v == S3_VERDICT_TRANSIENT) {
                if (q->attempts < S3_MAX_ATTEMPTS && budget_take(s)) {
                        q->not_before = now_usec() +
                                        s3_backoff_usec(q->attempts - 1, s->retry_base_ms, S3_RETRY_CAP_MS, &s->seed);
                        log_debug("s3 %s: %s; retrying (attempt %u)", request_what(q, what, sizeof(what)),
                                  q->last_error, q->attempts + 1);
                        *ret_retry = true;
                        return;
                }
                /* a request that failed this often says the store is
                 * down: the rest of the call is not sent either */
                s->budget_spent = true;
                err = cres != CURLE_OK ? curl_errno(cres) : -EIO;
                q->result = err;
                *ret_log = err;
                snprintf(q->reason, sizeof(q->reason), "gave up after %u attempt%s%s: ", q->attempts,
                         q->attempts == 1 ? "" : "s", q->attempts < S3_MAX_ATTEMPTS ? " (retry budget spent)" : "");
                return;
        }

        if (cres != CURLE_OK)
                err = curl_errno(cres);
        else if (status == 403)
                err = -EACCES;
        else if (status == 404)
                err = -ENXIO; /* NoSuchBucket: the others were handled above */
        else if (status == 400)
                err = -EINVAL;
        else if (status == 405 || status == 501)
                err = -EOPNOTSUPP;
        else
                err = -EIO;
        q->result = err;
        *ret_log = err;
        if (err == -EACCES)
                snprintf(q->reason, sizeof(q->reason), "access denied (check the credentials): ");
        else if (err == -ENXIO)
                snprintf(q->reason, sizeof(q->reason), "no bucket '%s' at '%s': ", s->u.bucket, s->u.endpoint);
        else if (cres == CURLE_PEER_FAILED_VERIFICATION || cres == CURLE_SSL_CACERT_BADFILE) {
                strncat(q->last_error, " (--insecure skips the check, for test servers only)",
                        sizeof(q->last_error) - strlen(q->last_error) - 1);
        }
}

/* Logs a failed request once, naming it and the store. */
static void request_log(struct s3_store *s, struct s3_request *q, int err)
{
        char what[256];

        log_error_errno(err, "s3 %s in '%s': %s%s", request_what(q, what, sizeof(what)), s->base.url ?: "s3://",
                        q->reason, q->last_error);
}

typedef void (*request_done_fn)(struct s3_request *q, size_t index, void *userdata);

/* Runs n requests, at most s->jobs at once, each to its end (done, failed,
 * or not sent because the budget ran out); calls done after each. */
static int run_requests(struct s3_store *s, struct s3_request *reqs, size_t n, request_done_fn done, void *userdata)
{
        size_t next = 0, running = 0, finished = 0, waiting = 0;
        unsigned logged = 0, unlogged = 0, cancelled = 0;
        int abort_err = 0;

        s->budget_retries = 0;
        s->budget_start = 0;
        s->budget_spent = false;

        while (finished < n) {
                uint64_t now = now_usec(), wake = UINT64_MAX;
                struct CURLMsg *m;
                int still, left;
                long timeout_ms;

                /* start retries that are due, then new requests */
                for (size_t i = 0; i < n && running < s->jobs && waiting > 0; i++) {
                        struct s3_request *q = &reqs[i];

                        if (q->state != REQ_WAITING)
                                continue;
                        if (q->not_before > now) {
                                if (q->not_before < wake)
                                        wake = q->not_before;
                                continue;
                        }
                        waiting--;
                        int r = request_start(s, q);
                        if (r < 0) {
                                q->state = REQ_DONE;
                                q->result = r;
                                snprintf(q->last_error, sizeof(q->last_error), "cannot set up the request: %s",
                                         strerror(-r));
                                request_log(s, q, r);
                                finished++;
                                if (done)
                                        done(q, (size_t)(q - reqs), userdata);
                                continue;
                        }
                        running++;
                }
                while (next < n && running < s->jobs) {
                        struct s3_request *q = &reqs[next++];

                        if (q->state == REQ_DONE) { /* given already finished (store.c failed it) */
                                finished++;
                                continue;
                        }
                        if (s->budget_spent || abort_err < 0) {
                                q->state = REQ_DONE;
                                q->result = abort_err < 0 ? abort_err : -ECANCELED;
                                cancelled++;
                                finished++;
                                if (done)
                                        done(q, (size_t)(q - reqs), userdata);
                                continue;
                        }
                        int r = request_start(s, q);
                        if (r < 0) {
                                q->state = REQ_DONE;
                                q->result = r;
                                snprintf(q->last_error, sizeof(q->last_error), "cannot set up the request: %s",
                                         strerror(-r));
                                request_log(s, q, r);
                                finished++;
                                if (done)
                                        done(q, (size_t)(q - reqs), userdata);
                                continue;
                        }
                        running++;
                }
                if (finished >= n)
                        break;

                if (curl_multi_perform(s->multi, &still) != CURLM_OK)
                        return log_error_errno(-EIO, "s3 requests to '%s' failed: libcurl multi error", s->base.url);
                while ((m = curl_multi_info_read(s->multi, &left))) {
                        struct s3_request *q;
                        char *priv = NULL;
                        bool retry;
                        int err;

                        if (m->msg != CURLMSG_DONE)
                                continue;
                        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
                        q = (struct s3_request *)priv;
                        request_finish_attempt(s, q, m->data.result, &retry, &err);
                        curl_multi_remove_handle(s->multi, q->easy);
                        easy_put(s, q->easy);
                        q->easy = NULL;
                        running--;
                        if (retry) {
                                q->state = REQ_WAITING;
                                waiting++;
                                continue;
                        }
                        q->state = REQ_DONE;
                        finished++;
                        if (err < 0) {
                                /* refused credentials or a missing bucket fail
                                 * every request alike: say it once, send no more */
                                bool store_wide = err == -EACCES || err == -ENXIO;

                                if (store_wide && abort_err == err)
                                        unlogged++;
                                else if (logged < S3_LOG_FAILURES_MAX) {
                                        request_log(s, q, err);
                                        logged++;
                                } else
                                        unlogged++;
                                if (store_wide)
                                        abort_err = err;
                        }
                        if (done)
                                done(q, (size_t)(q - reqs), userdata);
                }
                if (finished >= n)
                        break;

                /* wait for traffic, or until the next retry is due */
                now = now_usec();
                for (size_t i = 0; i < n && waiting > 0; i++)
                        if (reqs[i].state == REQ_WAITING && reqs[i].not_before < wake)
                                wake = reqs[i].not_before;
                timeout_ms = 1000;
                if (wake != UINT64_MAX)
                        timeout_ms = wake <= now ? 0 : (long)((wake - now + 999) / 1000);
                if (timeout_ms > 1000)
                        timeout_ms = 1000;
                if (running > 0 || timeout_ms > 0)
                        curl_multi_poll(s->multi, NULL, 0, (int)timeout_ms, NULL);
        }

        if (unlogged > 0)
                log_error("s3: %u more requests to '%s' failed", unlogged, s->base.url);
        if (cancelled > 0 && abort_err < 0)
                log_error("s3: %u more requests to '%s' not sent", cancelled, s->base.url);
        else if (cancelled > 0)
                log_error("s3: %u requests to '%s' not sent: the retry budget (%u retries, %" PRIu64 " s) is spent",
                          cancelled, s->base.url, S3_BUDGET_RETRIES, S3_BUDGET_USEC / 1000000);
        return 0;
}

static int run_one(struct s3_store *s, struct s3_request *q)
{
        int r = run_requests(s, q, 1, NULL, NULL);

        return r < 0 ? r : q->result;
}

/* ---- operations -------------------------------------------------------- */

static int s3_get(struct store *st, const char *key, uint64_t max, char **ret_data, size_t *ret_size,
                  char **ret_etag)
{
        struct s3_request q = { .method = S3_GET,
                                .key = key,
                                .quiet_enoent = true,
                                .max = max == UINT64_MAX ? 0 : max,
                                .want_etag = !!ret_etag };
        int r;

        r = run_one(S3(st), &q);
        if (r >= 0 && ret_etag && !q.etag)
                r = log_error_errno(-EBADMSG, "s3 GET '%s' in '%s': the answer has no ETag", key, st->url);
        if (r >= 0) {
                if (!q.data) {
                        q.data = malloc(1);
                        if (!q.data) {
                                request_done(&q);
                                return log_error_errno(-ENOMEM, "out of memory");
                        }
                        q.data[0] = '\0';
                }
                *ret_data = TAKE_PTR(q.data);
                *ret_size = q.size;
                if (ret_etag)
                        *ret_etag = TAKE_PTR(q.etag);
        }
        request_done(&q);
        return r;
}

static int s3_put(struct store *st, const char *key, const void *data, size_t size)
{
        struct s3_request q = { .method = S3_PUT, .key = key, .body = data, .body_size = size };
        int r = run_one(S3(st), &q);

        request_done(&q);
        return r;
}

/* S3's conditional writes (2024): PUT with If-None-Match: * creates only
 * when absent, PUT or DELETE with If-Match only when the ETag holds; a
 * failed condition is 412 PreconditionFailed. */
static int s3_put_cond(struct store *st, const char *key, const void *data, size_t size, const char *etag)
{
        _cleanup_free_ char *cond = NULL;
        struct s3_request q = { .key = key, .body = data, .body_size = size };
        int r;

        if (etag ? asprintf(&cond, "If-Match: %s", etag) < 0 : !(cond = strdup("If-None-Match: *")))
                return log_error_errno(-ENOMEM, "out of memory");
        q.method = data ? S3_PUT : S3_DELETE;
        q.cond = cond;
        r = run_one(S3(st), &q);
        request_done(&q);
        return r;
}

static int s3_exists(struct store *st, const char *key)
{
        struct s3_request q = { .method = S3_HEAD, .key = key };
        int r = run_one(S3(st), &q);

        request_done(&q);
        return r;
}

static int s3_remove(struct store *st, const char *key)
{
        struct s3_request q = { .method = S3_DELETE, .key = key };
        int r = run_one(S3(st), &q);

        request_done(&q);
        return r;
}

static int s3_list(struct store *st, const char *prefix, char ***ret_keys, int64_t **ret_mtimes)
{
        struct s3_store *s = S3(st);
        _cleanup_strv_free_ char **keys = NULL;
        _cleanup_free_ int64_t *mtimes = NULL;
        _cleanup_free_ char *full = NULL, *token = NULL;
        size_t n = 0, skip;
        int r;

        if (s->u.prefix) {
                if (asprintf(&full, "%s/%s", s->u.prefix, prefix) < 0) {
                        full = NULL;
                        return log_error_errno(-ENOMEM, "out of memory");
                }
        }
        skip = s->u.prefix ? strlen(s->u.prefix) + 1 : 0;

        for (;;) {
                _cleanup_(s3_list_page_done) struct s3_list_page page = { 0 };
                const char *pairs[8];
                size_t k = 0;
                struct s3_request q = { .method = S3_LIST, .key = prefix };

                pairs[k++] = "list-type";
                pairs[k++] = "2";
                if (*(full ?: prefix)) {
                        pairs[k++] = "prefix";
                        pairs[k++] = full ?: prefix;
                }
                if (token) {
                        pairs[k++] = "continuation-token";
                        pairs[k++] = token;
                }
                pairs[k] = NULL;
                q.query = s3_query_build(pairs);
                if (!q.query)
                        return log_error_errno(-ENOMEM, "out of memory");
                r = run_one(s, &q);
                if (r >= 0) {
                        r = s3_list_parse(q.data, q.size, &page);
                        if (r < 0)
                                log_error_errno(r, "s3 listing '%s' in '%s': malformed ListBucketResult", prefix,
                                                s->base.url);
                }
                request_done(&q);
                if (r < 0)
                        return r;

                int64_t *m = reallocarray(mtimes, n + page.n_keys + 1, sizeof(*m));
                if (!m)
                        return log_error_errno(-ENOMEM, "out of memory");
                mtimes = m;
                char **kv = reallocarray(keys, n + page.n_keys + 1, sizeof(*kv));
                if (!kv)
                        return log_error_errno(-ENOMEM, "out of memory");
                keys = kv;
                keys[n] = NULL;
                for (size_t i = 0; i < page.n_keys; i++) {
                        const char *key = page.keys[i];

                        /* S3 matched the prefix; what is not a valid key
                         * (a stranger's object) is not ours to show */
                        if (strlen(key) < skip || strncmp(key, full ?: prefix, strlen(full ?: prefix)) != 0 ||
                            !store_key_is_valid(key + skip))
                                continue;
                        keys[n] = strdup(key + skip);
                        if (!keys[n])
                                return log_error_errno(-ENOMEM, "out of memory");
                        mtimes[n++] = page.mtimes[i];
                        keys[n] = NULL;
                }
                if (!page.truncated)
                        break;
                if (!page.next_token || (token && streq(token, page.next_token)))
                        return log_error_errno(-EBADMSG,
                                               "s3 listing '%s' in '%s': truncated answer without a new "
                                               "continuation token",
                                               prefix, s->base.url);
                free(token);
                token = TAKE_PTR(page.next_token);
        }

        if (!keys) {
                keys = calloc(1, sizeof(*keys));
                if (!keys)
                        return log_error_errno(-ENOMEM, "out of memory");
        }
        store_sort_keys(keys, mtimes, n);
        *ret_keys = TAKE_PTR(keys);
        if (ret_mtimes) {
                if (!mtimes)
                        mtimes = calloc(1, sizeof(*mtimes));
                if (!mtimes) {
                        *ret_keys = strv_free(*ret_keys);
                        return log_error_errno(-ENOMEM, "out of memory");
                }
                *ret_mtimes = TAKE_PTR(mtimes);
        }
        return 0;
}

struct batch {
        struct store_item *items;
        size_t n, done;
        uint64_t bytes;
        store_progress_fn progress;
        void *userdata;
        enum s3_method method;
};

static void batch_item_done(struct s3_request *q, size_t index, void *userdata)
{
        struct batch *b = userdata;
        struct store_item *it = &b->items[index];

        it->result = q->result < 0 ? q->result : 0;
        if (q->result >= 0) {
                if (b->method == S3_HEAD)
                        it->exists = q->result > 0;
                else if (b->method == S3_GET) {
                        if (!q->data)
                                q->data = calloc(1, 1);
                        if (!q->data)
                                it->result = -ENOMEM;
                        else {
                                it->size = q->size;
                                it->data = TAKE_PTR(q->data);
                                b->bytes += it->size;
                        }
                } else
                        b->bytes += it->size;
        }
        /* a finished request's buffers are not needed any more */
        request_done(q);
        q->url = q->query = q->data = NULL;
        q->headers = NULL;
        b->done++;
        if (b->progress)
                b->progress(b->bytes, b->done, b->n, b->userdata);
}

static int run_batch(struct store *st, enum s3_method method, struct store_item *items, size_t n,
                     store_progress_fn progress, void *userdata)
{
        struct batch b = { .items = items, .n = n, .progress = progress, .userdata = userdata, .method = method };
        _cleanup_free_ struct s3_request *reqs = NULL;
        int r;

        if (n == 0)
                return 0;
        reqs = calloc(n, sizeof(*reqs));
        if (!reqs)
                return log_error_errno(-ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                /* an absent object is the caller's to report, as with get */
                reqs[i] = (struct s3_request){ .method = method, .key = items[i].key, .quiet_enoent = true };
                if (method == S3_PUT) {
                        reqs[i].body = items[i].data;
                        reqs[i].body_size = items[i].size;
                }
                if (method == S3_GET)
                        items[i].data = NULL;
                if (items[i].result < 0) /* failed by store.c already */
                        reqs[i].state = REQ_DONE;
        }
        r = run_requests(S3(st), reqs, n, batch_item_done, &b);
        for (size_t i = 0; i < n; i++)
                request_done(&reqs[i]);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        if (reqs[i].state != REQ_DONE && items[i].result >= 0)
                                items[i].result = r;
                return r;
        }
        for (size_t i = 0; i < n; i++)
                if (items[i].result < 0)
                        return items[i].result;
        return 0;
}

static int s3_put_many(struct store *s, struct store_item *items, size_t n, store_progress_fn progress, void *userdata)
{
        return run_batch(s, S3_PUT, items, n, progress, userdata);
}

static int s3_get_many(struct store *s, struct store_item *items, size_t n, store_progress_fn progress, void *userdata)
{
        return run_batch(s, S3_GET, items, n, progress, userdata);
}

static int s3_exists_many(struct store *s, struct store_item *items, size_t n)
{
        return run_batch(s, S3_HEAD, items, n, NULL, NULL);
}

const struct store_ops store_s3_ops = {
        .scheme = "s3",
        .open = s3_open,
        .close = s3_close,
        .get = s3_get,
        .put_cond = s3_put_cond,
        .put = s3_put,
        .exists = s3_exists,
        .remove = s3_remove,
        .list = s3_list,
        .put_many = s3_put_many,
        .get_many = s3_get_many,
        .exists_many = s3_exists_many,
};
