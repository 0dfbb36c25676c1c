/* Pulling an image from a store: rebuilds it into a sparse raw file (in the
 * local cache, or a given path), checking every block's SHA-256 as it
 * arrives and the whole image against its manifest before the file gets
 * its final name. Used by `ingot pull` and `ingot deploy`. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "catalog.h"
#include "store.h"

struct image_pull_stats {
        bool cached;     /* the file was there and matched: nothing fetched */
        uint64_t bytes;  /* fetched */
        size_t blocks;   /* fetched */
        double seconds;
};

/* $XDG_CACHE_HOME/ingot/images/ID.raw (created directory); a new string. Logs. */
int image_cache_path(const char *id, char **ret);

/* Pulls rec from s into out (NULL = image_cache_path()), with the manifest
 * (and its .sig when the record's signature applies) beside it. A file
 * already there with the record's size and manifest is reused. Refuses
 * pending and deregistered records and ones without a manifest (-EPERM,
 * -EBADMSG); warns about deprecated ones. On failure nothing finished is
 * left. Logs; returns negative errno. ret_path, ret_manifest and
 * ret_sig_path (NULL when no signature was written) are new strings; each
 * out-parameter may be NULL and is set only on success. */
int image_pull(struct store *s, const struct catalog_record *rec, const char *out, char **ret_path,
               char **ret_manifest, char **ret_sig_path, struct image_pull_stats *ret_stats);
