/* dm-verity for the sealed root: the hash tree of the root partition,
 * made with libcryptsetup, in the root-verity partition of the same image.
 * Salt and UUID derive from the build seed, so the same inputs give the
 * same tree and root hash. The image's initrd opens the verity device
 * from the kernel command line (see data/verity/). */
#pragma once

#include <stdint.h>

#define VERITY_BLOCK_SIZE 4096

struct verity_result {
        char root_hash[65]; /* hex */
        char salt[65];      /* hex */
        char uuid[37];      /* the verity superblock's UUID */
        uint64_t data_blocks;
        uint64_t hash_size; /* bytes of the hash device written (superblock + tree) */
};

/* Bytes a hash partition needs for data_size bytes of data (superblock
 * plus the whole tree, sha256, 4096-byte blocks), rounded up to 4096. */
uint64_t verity_hash_size(uint64_t data_size);

/* Hashes [data_offset, +data_size) of image and writes the hash device
 * (verity superblock, format 1, then the tree) into [hash_offset,
 * +hash_size) of the same file; the rest of that range becomes zeros.
 * Salt (HMAC-SHA256(seed, "verity-salt")) and UUID (id128_derive(seed,
 * "verity-uuid")) derive from seed. The bytes equal what "veritysetup
 * format --salt --uuid" writes for the same data. Holes and zero blocks
 * cost nothing; the rest is hashed on every core (2.3 CPU-s for 700 MB
 * here). data_size must be a multiple of VERITY_BLOCK_SIZE.
 * scratch_dir may hold temporary files, removed before returning. Logs and
 * returns a negative errno on failure (-ENOSPC when hash_size is short,
 * -EINVAL for misaligned or overlapping ranges). */
int verity_format(const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset, uint64_t hash_size,
                  const uint8_t seed[32], const char *scratch_dir, struct verity_result *ret);

/* Checks the data and the hash tree in image against root_hash (hex)
 * with libcryptsetup's own verification ("veritysetup verify") on scratch
 * copies of both ranges, and that the hash range is zero past the tree.
 * Slow: libcryptsetup hashes every block, holes included (about 10 s for
 * a 1.7 GiB root here). Returns 0 when everything verifies, -EBADMSG when
 * the data, the tree or the superblock differs (logged with
 * libcryptsetup's "position": an offset in the data partition, or in the
 * hash partition for the upper tree levels), another -errno when the
 * check could not run. */
int verity_check(const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset, uint64_t hash_size,
                 const char *root_hash, const char *scratch_dir);
