/* Owns Ed25519 keys and signatures: key files in and out, the signature
 * file's form, fingerprints. libcrypto's 1/0 convention and its error
 * queue stay in here; callers see negative errnos. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "shared/fileio.h"
#include "shared/id128.h"
#include "sign.h"

#define ED25519_SIG_SIZE 64
#define ED25519_KEY_SIZE 32
/* base64 of 64 bytes: 88 characters, the last two "==" */
#define SIG_BASE64_SIZE 88
#define KEY_FILE_MAX (64 * 1024)

DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);

/* Never prompt for a passphrase: an encrypted key is just not loadable. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
        return 0;
}

static void clear_and_free(char **p)
{
        if (*p) {
                OPENSSL_cleanse(*p, strlen(*p));
                free(*p);
        }
}

static int load_key(const char *path, bool private, EVP_PKEY **ret)
{
        _cleanup_(clear_and_free) char *text = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        size_t size;
        int r;

        r = read_full_file(path, KEY_FILE_MAX, &text, &size);
        if (r < 0)
                return r == -EFBIG ? -EBADMSG : r;
        {
                _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(text, (int)size);
                if (!b)
                        return -ENOMEM;
                k = private ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)
                            : PEM_read_bio_PUBKEY(b, NULL, no_passphrase, NULL);
        }
        if (!k && !private) {
                /* a private key file names its public key too */
                _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(text, (int)size);
                if (!b)
                        return -ENOMEM;
                k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
        }
        ERR_clear_error();
        if (!k || EVP_PKEY_get_id(k) != EVP_PKEY_ED25519)
                return -EBADMSG;
        *ret = TAKE_PTR(k);
        return 0;
}

int sign_load_private_key(const char *path, EVP_PKEY **ret)
{
        return load_key(path, true, ret);
}

int sign_load_public_key(const char *path, EVP_PKEY **ret)
{
        return load_key(path, false, ret);
}

int sign_fingerprint(EVP_PKEY *k, char buf[static SIGN_FINGERPRINT_MAX])
{
        uint8_t raw[ED25519_KEY_SIZE], digest[32];
        size_t len = sizeof(raw);

        if (EVP_PKEY_get_raw_public_key(k, raw, &len) != 1 || len != sizeof(raw)) {
                ERR_clear_error();
                return -EINVAL;
        }
        sha256_buffer(raw, len, digest);
        memcpy(buf, "SHA256:", 7);
        hex_encode(digest, sizeof(digest), buf + 7);
        return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                n -= (size_t)w;
        }
        return fsync(fd) < 0 ? -errno : 0;
}

/* PEM text of k (the private key as PKCS#8 when private) as a new string. */
static int key_to_pem(EVP_PKEY *k, bool private, char **ret)
{
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        char *data, *s;
        long n;
        int ok;

        if (!b)
                return -ENOMEM;
        ok = private ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_PUBKEY(b, k);
        if (ok != 1) {
                ERR_clear_error();
                return -EIO;
        }
        n = BIO_get_mem_data(b, &data);
        s = n > 0 ? strndup(data, (size_t)n) : NULL;
        if (n > 0)
                OPENSSL_cleanse(data, (size_t)n);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int sign_keygen(const char *prefix, char *ret_fingerprint)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_(clear_and_free) char *priv = NULL;
        _cleanup_free_ char *pub = NULL, *key_path = NULL, *pub_path = NULL;
        _cleanup_close_ int kfd = -1, pfd = -1;
        char fp[SIGN_FINGERPRINT_MAX];
        int r;

        if (asprintf(&key_path, "%s%s", prefix, SIGN_KEY_SUFFIX) < 0 ||
            asprintf(&pub_path, "%s%s", prefix, SIGN_PUB_SUFFIX) < 0)
                return -ENOMEM;
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        if (!k) {
                ERR_clear_error();
                return -EIO;
        }
        r = key_to_pem(k, true, &priv);
        if (r < 0)
                return r;
        r = key_to_pem(k, false, &pub);
        if (r < 0)
                return r;
        r = sign_fingerprint(k, fp);
        if (r < 0)
                return r;

        kfd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (kfd < 0)
                return -errno;
        pfd = open(pub_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (pfd < 0) {
                r = -errno;
                unlink(key_path);
                return r;
        }
        r = write_all(kfd, priv, strlen(priv));
        if (r >= 0)
                r = write_all(pfd, pub, strlen(pub));
        if (r < 0) {
                unlink(key_path);
                unlink(pub_path);
                return r;
        }
        if (ret_fingerprint)
                memcpy(ret_fingerprint, fp, sizeof(fp));
        return 0;
}

int sign_data(EVP_PKEY *k, const void *data, size_t size, char **ret)
{
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t sig[ED25519_SIG_SIZE];
        size_t len = sizeof(sig);
        char *text;

        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) != 1 || EVP_DigestSign(ctx, sig, &len, data, size) != 1 ||
            len != sizeof(sig)) {
                ERR_clear_error();
                return -EINVAL;
        }
        text = malloc(SIG_BASE64_SIZE + 2);
        if (!text)
                return -ENOMEM;
        EVP_EncodeBlock((unsigned char *)text, sig, sizeof(sig));
        memcpy(text + SIG_BASE64_SIZE, "\n", 2);
        *ret = text;
        return 0;
}

int sign_verify(EVP_PKEY *k, const void *data, size_t size, const char *sig, size_t sig_size)
{
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t raw[SIG_BASE64_SIZE / 4 * 3];
        int ok;

        if (!ctx)
                return -ENOMEM;
        while (sig_size > 0 && strchr(" \t\r\n", sig[0]) && sig[0]) {
                sig++;
                sig_size--;
        }
        while (sig_size > 0 && strchr(" \t\r\n", sig[sig_size - 1]) && sig[sig_size - 1])
                sig_size--;
        if (sig_size != SIG_BASE64_SIZE || memcmp(sig + SIG_BASE64_SIZE - 2, "==", 2) != 0)
                return -EBADMSG;
        if (EVP_DecodeBlock(raw, (const unsigned char *)sig, SIG_BASE64_SIZE) != (int)sizeof(raw))
                return -EBADMSG;
        if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) != 1) {
                ERR_clear_error();
                return -EINVAL;
        }
        ok = EVP_DigestVerify(ctx, raw, ED25519_SIG_SIZE, data, size);
        ERR_clear_error();
        return ok == 1 ? 0 : -EBADMSG;
}

int sign_file(EVP_PKEY *k, const char *path, const char *sig_path)
{
        _cleanup_free_ char *data = NULL, *sig = NULL;
        size_t size;
        int r;

        r = read_full_file(path, SIZE_MAX / 2, &data, &size);
        if (r < 0)
                return r;
        r = sign_data(k, data, size, &sig);
        if (r < 0)
                return r;
        return write_file_atomic(sig_path, sig, strlen(sig), 0644);
}
