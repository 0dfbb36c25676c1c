/* The image store: a flat namespace of immutable objects (blocks, block
 * lists, image records) plus small mutable pointers (channels), behind one
 * ops table. Backends: file://DIR (the embedded default,
 * $XDG_DATA_HOME/ingot/store) and s3://BUCKET[/PREFIX] (any S3-compatible
 * object store, path-style, SigV4 through libcurl's CURLOPT_AWS_SIGV4).
 *
 * Keys are relative, '/'-separated, [A-Za-z0-9._@:=-] per component:
 *   blocks/<sha256 hex>              one 1 MiB block of an image (never zero)
 *   blocklists/<ami-id>.json         the block list of one image
 *   images/<ami-id>.json             the image record (written last)
 *   names/<name>/<version>.json      name+version -> ami id (immutable)
 *   channels/<name>/<channel>.json   the only mutable objects
 * A put is atomic: a reader sees the old object, the new one, or none,
 * never a torn one. Credentials never appear in logs, errors or output. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/macro.h"

/* 1 MiB: an ext4 or FAT change touches metadata in a handful of places
 * (superblock, group descriptors, inode table, directory, the file), and
 * each costs one block in an incremental push: at 1 MiB a one-file change
 * of the Debian image re-sends ~1-2 % of it, at 4 MiB ~7 %. A 2 GiB image
 * is at most 2048 objects, sent 8 at a time over kept-alive connections;
 * partitions are 1 MiB aligned, so no block straddles two. */
#define STORE_BLOCK_SIZE (UINT64_C(1) << 20)

struct store_options {
        bool insecure;  /* s3: do not verify TLS (only when asked for explicitly) */
        unsigned jobs;  /* parallel requests for the *_many calls; 0 = default (8) */
};

struct store;

/* One object of a batch. For put_many: key, data, size in; for
 * get_many: key in, data/size out (malloc'd, the caller frees); for
 * exists_many: key in, exists out. result: 0, or a negative errno for
 * this object (the batch goes on with the others). */
struct store_item {
        const char *key;
        void *data;
        size_t size;
        bool exists;
        int result;
};

/* Called after each finished item of a batch, with running totals. */
typedef void (*store_progress_fn)(uint64_t bytes_done, size_t items_done, size_t items_total, void *userdata);

struct store_ops {
        const char *scheme; /* "file", "s3" */
        int (*open)(const char *url, const struct store_options *o, struct store **ret);
        void (*close)(struct store *s);
        /* -ENOENT when absent; -EFBIG when the object is larger than max
         * bytes (nothing more is read). ret_etag, when not NULL, receives
         * the object's entity tag (a new string), for put_cond.
         * (Both backends NUL-terminate the data past size, for text.) */
        int (*get)(struct store *s, const char *key, uint64_t max, char **ret_data, size_t *ret_size,
                   char **ret_etag);
        int (*put)(struct store *s, const char *key, const void *data, size_t size);
        /* A compare-and-swap. etag NULL: creates key only when it is
         * absent, else -EEXIST (file: link(); S3: If-None-Match: *).
         * Otherwise replaces key only when its entity tag is still etag,
         * else -ESTALE (also when it is absent by now) (file: under an
         * exclusive flock; S3: If-Match). data NULL: removes key instead,
         * under the same condition (etag required). Not logged when the
         * condition fails. */
        int (*put_cond)(struct store *s, const char *key, const void *data, size_t size, const char *etag);
        /* Optional: removes what killed writers left behind (file: the
         * KEY~PID.N temporaries of writers that are gone, or older than
         * older_than seconds since the epoch); counts them. */
        int (*sweep)(struct store *s, int64_t older_than, size_t *ret_removed);
        /* 1 present, 0 absent, or -errno. */
        int (*exists)(struct store *s, const char *key);
        /* Absent is not an error. */
        int (*remove)(struct store *s, const char *key);
        /* Every key under prefix (e.g. "images/"), sorted; with their
         * modification times (seconds since the epoch) when ret_mtimes. */
        int (*list)(struct store *s, const char *prefix, char ***ret_keys, int64_t **ret_mtimes);
        /* Batches, many requests in flight (s3: curl multi, bounded by
         * jobs). Return 0 when every item succeeded, else the first
         * item's error; every item's result is set either way. */
        int (*put_many)(struct store *s, struct store_item *items, size_t n, store_progress_fn progress,
                        void *userdata);
        int (*get_many)(struct store *s, struct store_item *items, size_t n, store_progress_fn progress,
                        void *userdata);
        int (*exists_many)(struct store *s, struct store_item *items, size_t n);
};

struct store {
        const struct store_ops *ops;
        char *url; /* as given, for messages; never holds a credential */
};

/* The store URL to use: arg (--store), else $INGOT_STORE, else
 * file://$XDG_DATA_HOME/ingot/store (~/.local/share/ingot/store). */
int store_url_default(const char *arg, char **ret);

/* Opens url with the backend its scheme names. An unknown scheme or a
 * malformed URL is -EINVAL (logged: exit 2); missing credentials for s3
 * are -EACCES (logged). */
int store_open(const char *url, const struct store_options *o, struct store **ret);
struct store *store_close(struct store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct store *, store_close);

/* Shorthands through s->ops. */
int store_get(struct store *s, const char *key, char **ret_data, size_t *ret_size);
/* store_get with a size limit (-EFBIG, logged) and the entity tag. */
int store_get_full(struct store *s, const char *key, uint64_t max, char **ret_data, size_t *ret_size, char **ret_etag);
/* See put_cond above. */
int store_put_cond(struct store *s, const char *key, const void *data, size_t size, const char *etag);
int store_remove_cond(struct store *s, const char *key, const char *etag);
/* 0 (nothing removed) when the backend has nothing to sweep. */
int store_sweep(struct store *s, int64_t older_than, size_t *ret_removed);
int store_put(struct store *s, const char *key, const void *data, size_t size);
int store_exists(struct store *s, const char *key);
int store_remove(struct store *s, const char *key);
int store_list(struct store *s, const char *prefix, char ***ret_keys, int64_t **ret_mtimes);
int store_put_many(struct store *s, struct store_item *items, size_t n, store_progress_fn progress, void *userdata);
int store_get_many(struct store *s, struct store_item *items, size_t n, store_progress_fn progress, void *userdata);
int store_exists_many(struct store *s, struct store_item *items, size_t n);

/* Keys: true when every component is [A-Za-z0-9._@:=-]+ and not "." or "..". */
bool store_key_is_valid(const char *key);
