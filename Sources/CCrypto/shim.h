// The low-level SHA256_CTX API is deprecated in OpenSSL 3 but is the only one whose state can be
// saved and restored (resume needs that); it runs the same SHA-NI/AVX code as EVP.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <openssl/crypto.h>
