/* Ed25519 signatures over manifests (OpenSSL libcrypto). A key pair is a
 * PKCS#8 PEM private key (mode 0600) and a SubjectPublicKeyInfo PEM public
 * key; a signature file holds the base64 of the 64-byte signature over the
 * manifest's exact bytes, then "\n". A key's fingerprint is "SHA256:"
 * followed by the hex SHA-256 of its raw 32-byte public key. Nothing here
 * logs, and no private key material ever leaves these functions except
 * into the key file. */
#pragma once

#include <stddef.h>

#include <openssl/evp.h>

#include "shared/macro.h"

/* "SHA256:" + 64 hex digits + NUL */
#define SIGN_FINGERPRINT_MAX 72
#define SIGN_KEY_SUFFIX ".key"
#define SIGN_PUB_SUFFIX ".pub"
#define SIGN_SIG_SUFFIX ".sig"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);

/* Loads a PEM Ed25519 private key. Returns -errno when the file cannot be
 * read, -EBADMSG when it is not an Ed25519 private key. *ret is the
 * caller's (EVP_PKEY_free). */
int sign_load_private_key(const char *path, EVP_PKEY **ret);
/* Loads a PEM Ed25519 public key (a private key file is accepted too; only
 * its public half is used). Errors as above. */
int sign_load_public_key(const char *path, EVP_PKEY **ret);

/* The fingerprint of k's public key into buf; 0 or a negative errno. */
int sign_fingerprint(EVP_PKEY *k, char buf[static SIGN_FINGERPRINT_MAX]);

/* Makes a new key pair and writes PREFIX.key (0600) and PREFIX.pub (0644),
 * both created exclusively: -EEXIST when either exists, and then nothing
 * is written. On any failure neither file is left behind. Sets
 * ret_fingerprint (may be NULL). */
int sign_keygen(const char *prefix, char *ret_fingerprint);

/* The signature file's text for data: base64 + "\n", a new string. */
int sign_data(EVP_PKEY *k, const void *data, size_t size, char **ret);
/* Checks sig (the signature file's text; surrounding whitespace allowed)
 * over data with k: 0 when it verifies, -EBADMSG when it does not or is
 * not a signature. */
int sign_verify(EVP_PKEY *k, const void *data, size_t size, const char *sig, size_t sig_size);

/* Signs the file at path into sig_path (written atomically, 0644). */
int sign_file(EVP_PKEY *k, const char *path, const char *sig_path);
