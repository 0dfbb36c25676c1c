/* Owns id derivation (HMAC-SHA256) and the UUID text form. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "id128.h"

void id128_derive(const uint8_t key[32], const void *data, size_t size, id128_t *ret)
{
        uint8_t mac[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        HMAC(EVP_sha256(), key, 32, data, size, mac, &len);
        memcpy(ret->bytes, mac, 16);
        /* RFC 4122 version 4, variant 10xx: the form every tool expects. */
        ret->bytes[6] = (uint8_t)((ret->bytes[6] & 0x0f) | 0x40);
        ret->bytes[8] = (uint8_t)((ret->bytes[8] & 0x3f) | 0x80);
}

char *id128_to_string(const id128_t *id, char buf[static ID128_STRING_MAX])
{
        static const char hex[] = "0123456789abcdef";
        size_t j = 0;

        for (size_t i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        buf[j++] = '-';
                buf[j++] = hex[id->bytes[i] >> 4];
                buf[j++] = hex[id->bytes[i] & 15];
        }
        buf[j] = '\0';
        return buf;
}

static int unhex(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int id128_from_string(const char *s, id128_t *ret)
{
        id128_t id;
        size_t j = 0;

        if (!s || strlen(s) != 36)
                return -EINVAL;
        for (size_t i = 0; i < 16; i++) {
                int hi, lo;

                if (j == 8 || j == 13 || j == 18 || j == 23) {
                        if (s[j] != '-')
                                return -EINVAL;
                        j++;
                }
                hi = unhex(s[j]);
                lo = unhex(s[j + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                id.bytes[i] = (uint8_t)(hi << 4 | lo);
                j += 2;
        }
        *ret = id;
        return 0;
}

bool id128_equal(const id128_t *a, const id128_t *b)
{
        return memcmp(a->bytes, b->bytes, 16) == 0;
}

void sha256_buffer(const void *data, size_t size, uint8_t ret[32])
{
        SHA256(data, size, ret);
}

char *hex_encode(const uint8_t *data, size_t size, char *buf)
{
        static const char hex[] = "0123456789abcdef";

        for (size_t i = 0; i < size; i++) {
                buf[2 * i] = hex[data[i] >> 4];
                buf[2 * i + 1] = hex[data[i] & 15];
        }
        buf[2 * size] = '\0';
        return buf;
}
