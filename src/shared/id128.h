/* 128-bit identifiers (GPT GUIDs, filesystem UUIDs) and their derivation
 * from a seed. Nothing in the build path calls a random source: every id is
 * the first 128 bits of HMAC-SHA256(key, data), marked as a version-4 UUID,
 * the way systemd-repart derives partition UUIDs from --seed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct id128 {
        uint8_t bytes[16];
} id128_t;

#define ID128_STRING_MAX 37

/* Derives an id from a 32-byte key and arbitrary data. */
void id128_derive(const uint8_t key[32], const void *data, size_t size, id128_t *ret);
/* Lower-case 8-4-4-4-12 form into buf (ID128_STRING_MAX bytes); returns buf. */
char *id128_to_string(const id128_t *id, char buf[static ID128_STRING_MAX]);
/* Parses the 8-4-4-4-12 form (either case); -EINVAL when malformed. */
int id128_from_string(const char *s, id128_t *ret);
bool id128_equal(const id128_t *a, const id128_t *b);

/* SHA-256 helpers for input digests. */
void sha256_buffer(const void *data, size_t size, uint8_t ret[32]);
/* 64 lower-case hex digits plus NUL. */
char *hex_encode(const uint8_t *data, size_t size, char *buf);
