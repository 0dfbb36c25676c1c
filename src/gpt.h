/* Writing a planned layout as a GPT into an image file: libparted lays out
 * the table (protective MBR, primary and backup headers and entry arrays,
 * partition names), then a small post-pass gives every entry the plan's
 * type GUID, unique GUID and attribute bits and the disk its GUID, which
 * libparted 3.5 cannot set. The same plan always gives the same bytes. */
#pragma once

#include <stdbool.h>

#include "part.h"

/* Writes the GPT for l into the regular file at path, which must already
 * be l->disk_size bytes long. legacy_boot sets attribute bit 2 ("legacy
 * BIOS bootable") on the ESP, the partition syslinux's gptmbr.bin boots.
 * Logs and returns a negative errno on failure. */
int gpt_write(const char *path, const struct part_layout *l, bool legacy_boot);

/* The on-disk (mixed-endian) form of a GUID: the first three fields
 * little-endian, the last two as they read. */
void gpt_guid_to_disk(const id128_t *id, uint8_t ret[16]);
