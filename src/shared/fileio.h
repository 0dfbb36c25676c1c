/* Whole-file reads and atomic writes. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Reads all of path (at most max_size bytes, else -EFBIG) into a new
 * NUL-terminated buffer the caller frees. */
int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
/* Writes data to a temporary file beside path, fsyncs it and renames it into
 * place, so readers see the old file or the whole new one, never a part.
 * mode is the new file's permission bits. */
int write_file_atomic(const char *path, const void *data, size_t size, unsigned mode);

/* mkdir -p: creates path and its missing parents with mode. */
int mkdir_p(const char *path, mode_t mode);
/* $XDG_CACHE_HOME/ingot, else $HOME/.cache/ingot (absolute paths only);
 * -ENOENT when neither is set. */
int xdg_cache_dir(char **ret);
/* rm -rf without crossing into other filesystems; a missing path is fine. */
int rm_rf(const char *path);
/* Copies everything from in to out (both open fds). */
int copy_fd(int in, int out);
/* Copies everything from in into the file to (created or truncated, then
 * given mode); on failure to is removed. */
int copy_fd_to_file(int in, const char *to, mode_t mode);
/* Copies from to to (created or truncated, then given mode); on failure
 * to is removed. */
int copy_file(const char *from, const char *to, mode_t mode);
