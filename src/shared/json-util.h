/* Small jansson constructors shared by every printer of JSON (the plan,
 * inspect). Each returns a new reference, as jansson's own do. */
#pragma once

#include <stdint.h>

#include <jansson.h>

#include "strv.h"

static inline json_t *json_str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

/* jansson integers are signed 64-bit; every size and offset here fits. */
static inline json_t *json_u64(uint64_t v)
{
        return json_integer((json_int_t)v);
}

static inline json_t *json_strv(char *const *l)
{
        json_t *a = json_array();

        STRV_FOREACH (i, l)
                json_array_append_new(a, json_string(*i));
        return a;
}
