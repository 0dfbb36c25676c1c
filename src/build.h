/* The build: runs the stages in order for a spec (rootfs → ESP staging →
 * disk → BIOS boot code → optional qcow2) and puts the image in place only
 * when all of them succeeded. Nothing in the output directory looks
 * finished before that: the image is written under a hidden partial name
 * and renamed last. */
#pragma once

#include "spec.h"

struct build_options {
        const char *cache_dir; /* NULL = $XDG_CACHE_HOME/ingot (or ~/.cache/ingot) */
        bool progress;         /* show stage progress on stderr (a terminal) */
        const char *sign_key;  /* --sign-key: PEM Ed25519 private key; NULL = manifest unsigned */
};

/* Builds s->output_image. Logs each stage with its time; returns 0 or a
 * negative errno (-EBADMSG for bad input found during the build). */
int build_image(const struct spec *s, const struct build_options *o);

/* --check-reproducible: builds so twice, into two temporary directories
 * under its output directory (one after the other, so at different
 * times), compares the images byte for byte and moves the first build's
 * outputs into place only when they are identical. Otherwise logs the
 * first differing partition and offset, keeps both for inspection and
 * returns -EIO (exit 1). */
int build_check_reproducible(const struct spec_options *so, const struct build_options *o);

/* The cache directory build_image() uses for o (a new string). */
int build_cache_dir(const struct build_options *o, char **ret);
