/* Parsing of numbers, sizes and booleans as they appear in spec files.
 * All return 0 or a negative errno (-EINVAL malformed, -ERANGE overflow)
 * and set *ret only on success. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

int parse_uint64(const char *s, uint64_t *ret);
/* "512", "4K", "256M", "2G", "1T", also "MiB"/"MB" spellings (all powers of
 * 1024). A bare number is multiplied by unit (1 for bytes, 1 MiB for
 * kickstart sizes). */
int parse_size(const char *s, uint64_t unit, uint64_t *ret);
/* yes/no, true/false, on/off, 1/0 */
int parse_boolean(const char *s, bool *ret);
