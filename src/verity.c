/* Placeholder until the libcryptsetup implementation lands. */
#include "config.h"

#include <errno.h>

#include "shared/log.h"
#include "verity.h"

uint64_t verity_hash_size(uint64_t data_size)
{
        (void)data_size;
        return 0;
}

int verity_format(const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset,
                  uint64_t hash_size, const uint8_t seed[32], const char *scratch_dir, struct verity_result *ret)
{
        (void)image, (void)data_offset, (void)data_size, (void)hash_offset, (void)hash_size, (void)seed,
                (void)scratch_dir, (void)ret;
        return log_error_errno(-EOPNOTSUPP, "verity is not implemented yet");
}

int verity_check(const char *image, uint64_t data_offset, uint64_t data_size, uint64_t hash_offset,
                 uint64_t hash_size, const char *root_hash, const char *scratch_dir)
{
        (void)image, (void)data_offset, (void)data_size, (void)hash_offset, (void)hash_size, (void)root_hash,
                (void)scratch_dir;
        return log_error_errno(-EOPNOTSUPP, "verity is not implemented yet");
}
