/* Whole-file reads and atomic writes. */
#pragma once

#include <stddef.h>

/* Reads all of path (at most max_size bytes, else -EFBIG) into a new
 * NUL-terminated buffer the caller frees. */
int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
/* Writes data to a temporary file beside path, fsyncs it and renames it into
 * place, so readers see the old file or the whole new one, never a part.
 * mode is the new file's permission bits. */
int write_file_atomic(const char *path, const void *data, size_t size, unsigned mode);
