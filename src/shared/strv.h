/* NULL-terminated string vectors (char **). A strv owns its strings; a NULL
 * strv is the empty list and every function here accepts it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

size_t strv_length(char *const *l);
bool strv_contains(char *const *l, const char *s);
/* Appends s and takes ownership of it, also on failure (then s is freed).
 * Returns 0 or -ENOMEM. */
int strv_consume(char ***l, char *s);
/* Appends a copy of s. */
int strv_extend(char ***l, const char *s);
/* Appends copies of every string of other. */
int strv_extend_strv(char ***l, char *const *other);
/* Splits s at any of the characters in sep, dropping empty fields, and
 * appends the pieces. */
int strv_split_extend(char ***l, const char *s, const char *sep);
/* Removes every element equal to s; returns how many were removed. */
size_t strv_remove(char **l, const char *s);
char **strv_free(char **l);
void strv_freep(char ***l);
#define _cleanup_strv_free_ _cleanup_(strv_freep)

#define STRV_FOREACH(s, l) for (char *const *s = (l); s && *s; s++)
