/* Owns the choice of store backend (by URL scheme), the default store
 * location, key validation, and the loops that stand in for a backend's
 * batch calls when it has none. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "shared/strv.h"
#include "store-internal.h"
#include "store.h"

static const struct store_ops *const store_backends[] = {
        &store_file_ops,
        &store_s3_ops,
};

static bool key_char_ok(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("._@:=-", c);
}

/* Checks s[0..len) as one component: non-empty, allowed characters only,
 * not "." or "..". */
static bool component_ok(const char *s, size_t len)
{
        if (len == 0)
                return false;
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
                return false;
        for (size_t i = 0; i < len; i++)
                if (s[i] == '\0' || !key_char_ok(s[i]))
                        return false;
        return true;
}

bool store_key_is_valid(const char *key)
{
        if (!key || !*key)
                return false;
        for (const char *p = key;;) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t)(slash - p) : strlen(p);

                if (!component_ok(p, len))
                        return false;
                if (!slash)
                        return true;
                p = slash + 1;
        }
}

bool store_prefix_is_valid(const char *prefix)
{
        if (!prefix)
                return false;
        for (const char *p = prefix; *p;) {
                const char *slash = strchr(p, '/');

                if (!slash) { /* a partial last component: any allowed characters */
                        for (; *p; p++)
                                if (!key_char_ok(*p))
                                        return false;
                        return true;
                }
                if (!component_ok(p, (size_t)(slash - p)))
                        return false;
                p = slash + 1;
        }
        return true;
}

struct key_mtime {
        char *key;
        int64_t mtime;
};

static int cmp_key_mtime(const void *a, const void *b)
{
        return strcmp(((const struct key_mtime *)a)->key, ((const struct key_mtime *)b)->key);
}

void store_sort_keys(char **keys, int64_t *mtimes, size_t n)
{
        struct key_mtime *v;

        if (n < 2)
                return;
        v = calloc(n, sizeof(*v));
        if (!v) { /* cannot fail in practice; sort the keys alone rather than not at all */
                if (!mtimes)
                        qsort(keys, n, sizeof(*keys), (int (*)(const void *, const void *))strcmp);
                return;
        }
        for (size_t i = 0; i < n; i++)
                v[i] = (struct key_mtime){ keys[i], mtimes ? mtimes[i] : 0 };
        qsort(v, n, sizeof(*v), cmp_key_mtime);
        for (size_t i = 0; i < n; i++) {
                keys[i] = v[i].key;
                if (mtimes)
                        mtimes[i] = v[i].mtime;
        }
        free(v);
}

int store_url_default(const char *arg, char **ret)
{
        const char *e, *home;
        char *url;

        if (arg && *arg)
                url = strdup(arg);
        else if ((e = getenv("INGOT_STORE")) && *e)
                url = strdup(e);
        else if ((e = getenv("XDG_DATA_HOME")) && *e == '/') {
                if (asprintf(&url, "file://%s/ingot/store", e) < 0)
                        url = NULL;
        } else if ((home = getenv("HOME")) && *home == '/') {
                if (asprintf(&url, "file://%s/.local/share/ingot/store", home) < 0)
                        url = NULL;
        } else
                return log_error_errno(-ENXIO, "no store given: set --store, $INGOT_STORE or $HOME");
        if (!url)
                return log_error_errno(-ENOMEM, "out of memory");
        *ret = url;
        return 0;
}

int store_open(const char *url, const struct store_options *o, struct store **ret)
{
        static const struct store_options defaults = { 0 };
        const char *sep;
        struct store *s = NULL;
        char *copy;
        int r;

        if (!url || !(sep = strstr(url, "://")))
                return log_error_errno(-EINVAL, "store '%s' is not a URL (file:///DIR or s3://BUCKET[/PREFIX])",
                                       strna(url));
        for (size_t i = 0; i < ELEMENTSOF(store_backends); i++) {
                const struct store_ops *ops = store_backends[i];

                if (strlen(ops->scheme) != (size_t)(sep - url) || strncmp(url, ops->scheme, (size_t)(sep - url)))
                        continue;
                copy = strdup(url);
                if (!copy)
                        return log_error_errno(-ENOMEM, "out of memory");
                r = ops->open(url, o ? o : &defaults, &s);
                if (r < 0) {
                        free(copy);
                        return r;
                }
                s->ops = ops;
                s->url = copy;
                *ret = s;
                return 0;
        }
        return log_error_errno(-EINVAL, "unknown store scheme in '%s' (expected file:// or s3://)", url);
}

struct store *store_close(struct store *s)
{
        char *url;

        if (!s)
                return NULL;
        url = s->url;
        s->ops->close(s);
        free(url);
        return NULL;
}

static int check_key(struct store *s, const char *key)
{
        if (!store_key_is_valid(key))
                return log_error_errno(-EINVAL, "invalid store key '%s' in '%s'", strna(key), s->url);
        return 0;
}

int store_get(struct store *s, const char *key, char **ret_data, size_t *ret_size)
{
        int r = check_key(s, key);

        return r < 0 ? r : s->ops->get(s, key, UINT64_MAX, ret_data, ret_size, NULL);
}

int store_get_full(struct store *s, const char *key, uint64_t max, char **ret_data, size_t *ret_size, char **ret_etag)
{
        int r = check_key(s, key);

        if (r < 0)
                return r;
        r = s->ops->get(s, key, max, ret_data, ret_size, ret_etag);
        if (r == -EFBIG)
                return log_error_errno(r, "'%s' in '%s' is larger than %llu bytes: not one of ingot's objects", key,
                                       s->url, (unsigned long long)max);
        return r;
}

int store_put_cond(struct store *s, const char *key, const void *data, size_t size, const char *etag)
{
        int r = check_key(s, key);

        if (r < 0)
                return r;
        if (!data)
                return log_error_errno(-EINVAL, "store_put_cond: no data for '%s'", key);
        return s->ops->put_cond(s, key, data, size, etag);
}

int store_remove_cond(struct store *s, const char *key, const char *etag)
{
        int r = check_key(s, key);

        if (r < 0)
                return r;
        if (!etag)
                return log_error_errno(-EINVAL, "store_remove_cond: no entity tag for '%s'", key);
        return s->ops->put_cond(s, key, NULL, 0, etag);
}

int store_sweep(struct store *s, int64_t older_than, size_t *ret_removed)
{
        *ret_removed = 0;
        return s->ops->sweep ? s->ops->sweep(s, older_than, ret_removed) : 0;
}

int store_put(struct store *s, const char *key, const void *data, size_t size)
{
        int r = check_key(s, key);

        return r < 0 ? r : s->ops->put(s, key, data, size);
}

int store_exists(struct store *s, const char *key)
{
        int r = check_key(s, key);

        return r < 0 ? r : s->ops->exists(s, key);
}

int store_remove(struct store *s, const char *key)
{
        int r = check_key(s, key);

        return r < 0 ? r : s->ops->remove(s, key);
}

int store_list(struct store *s, const char *prefix, char ***ret_keys, int64_t **ret_mtimes)
{
        if (!prefix)
                prefix = "";
        if (!store_prefix_is_valid(prefix))
                return log_error_errno(-EINVAL, "invalid store prefix '%s' in '%s'", prefix, s->url);
        return s->ops->list(s, prefix, ret_keys, ret_mtimes);
}

/* Invalid keys fail their item (and are logged) without being sent; every
 * other item starts with result 0, which is what tells a backend's batch
 * call to handle it. */
static void check_items(struct store *s, struct store_item *items, size_t n)
{
        for (size_t i = 0; i < n; i++)
                items[i].result = check_key(s, items[i].key);
}

static int first_error(const struct store_item *items, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (items[i].result < 0)
                        return items[i].result;
        return 0;
}

enum batch_kind { BATCH_PUT, BATCH_GET, BATCH_EXISTS };

/* The fallback for a backend without batch calls: one at a time. */
static int batch_loop(struct store *s, enum batch_kind kind, struct store_item *items, size_t n,
                      store_progress_fn progress, void *userdata)
{
        uint64_t bytes = 0;

        for (size_t i = 0; i < n; i++) {
                struct store_item *it = &items[i];
                char *data;
                size_t size;
                int r = 0;

                if (it->result < 0)
                        continue;
                switch (kind) {
                case BATCH_PUT:
                        r = s->ops->put(s, it->key, it->data, it->size);
                        if (r >= 0)
                                bytes += it->size;
                        break;
                case BATCH_GET:
                        r = s->ops->get(s, it->key, UINT64_MAX, &data, &size, NULL);
                        if (r >= 0) {
                                it->data = data;
                                it->size = size;
                                bytes += size;
                        }
                        break;
                case BATCH_EXISTS:
                        r = s->ops->exists(s, it->key);
                        if (r >= 0)
                                it->exists = r > 0;
                        break;
                }
                it->result = r < 0 ? r : 0;
                if (progress)
                        progress(bytes, i + 1, n, userdata);
        }
        return first_error(items, n);
}

/* Runs a batch through the backend's call, or through the loop. */
static int batch(struct store *s, enum batch_kind kind, struct store_item *items, size_t n, store_progress_fn progress,
                 void *userdata)
{
        check_items(s, items, n);
        if (kind == BATCH_PUT && s->ops->put_many)
                s->ops->put_many(s, items, n, progress, userdata);
        else if (kind == BATCH_GET && s->ops->get_many)
                s->ops->get_many(s, items, n, progress, userdata);
        else if (kind == BATCH_EXISTS && s->ops->exists_many)
                s->ops->exists_many(s, items, n);
        else
                batch_loop(s, kind, items, n, progress, userdata);
        return first_error(items, n);
}

int store_put_many(struct store *s, struct store_item *items, size_t n, store_progress_fn progress, void *userdata)
{
        return batch(s, BATCH_PUT, items, n, progress, userdata);
}

int store_get_many(struct store *s, struct store_item *items, size_t n, store_progress_fn progress, void *userdata)
{
        return batch(s, BATCH_GET, items, n, progress, userdata);
}

int store_exists_many(struct store *s, struct store_item *items, size_t n)
{
        return batch(s, BATCH_EXISTS, items, n, NULL, NULL);
}
