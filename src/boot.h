/* The boot stage: systemd-boot for UEFI and syslinux for BIOS, installed
 * from the host into the image, no VM and no mount. Both load the same
 * kernel and initrd from the ESP; the root is found by PARTUUID. */
#pragma once

#include <stdint.h>

#include "spec.h"

/* Fills esp_dir (an existing empty directory) with what the ESP holds for
 * the spec's boot mode: EFI/BOOT/BOOTX64.EFI + loader/ (UEFI), syslinux.cfg
 * (BIOS), and the kernel and initrd, booted with cmdline (NULL = the
 * spec's; a verity build passes the spec's plus the root hash). */
int boot_stage_esp(const struct spec *s, const char *cmdline, const char *kernel, const char *initrd,
                   const char *esp_dir);
/* After the disk stage, for BIOS: syslinux's boot sector into the ESP
 * (syslinux --install --offset) and gptmbr.bin into the MBR boot code. A no-op
 * for uefi-only images. */
int boot_install_bios(const struct spec *s, const char *image);
