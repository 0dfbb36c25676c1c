/* libFuzzer target: any bytes through the kickstart parser. %include lines
 * resolve against a directory that does not exist, so the fuzzer exercises
 * the error path without touching the host's files. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kickstart.h"
#include "shared/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static FILE *devnull;
        struct kickstart *ks = NULL;

        if (!devnull) {
                devnull = fopen("/dev/null", "we");
                log_set_stream(devnull);
        }
        if (kickstart_parse_buffer("/nonexistent-ingot-fuzz/fuzz.ks", (const char *)data, size, NULL, &ks) == 0)
                kickstart_free(ks);
        return 0;
}
