/* Placeholder until the scan lands. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "hygiene.h"
#include "shared/log.h"

int hygiene_scan(const char *image, struct hygiene_finding **ret, size_t *ret_n)
{
        (void)image;
        *ret = NULL;
        *ret_n = 0;
        return log_error_errno(-EOPNOTSUPP, "the hygiene scan is not implemented yet");
}

void hygiene_findings_free(struct hygiene_finding *f, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(f[i].path);
                free(f[i].reason);
        }
        free(f);
}
