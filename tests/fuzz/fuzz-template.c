/* libFuzzer target: any bytes through the template loader. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "shared/log.h"
#include "template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static FILE *devnull;
        struct template *t = NULL;

        if (!devnull) {
                devnull = fopen("/dev/null", "we");
                log_set_stream(devnull);
        }
        if (template_load_buffer("/nonexistent-ingot-fuzz/fuzz.conf", (const char *)data, size, &t) == 0)
                template_free(t);
        return 0;
}
