"""The system's OpenSSL, as nginx links it: libssl.so.3 through cffi's ABI mode.

The TLS engine (:mod:`mailfront.server.tls_openssl`,
:mod:`mailfront.server.tls_transport`) calls OpenSSL the way nginx does, and
needs calls that no Python binding wraps: the session cache callbacks and
size, the session ticket key callback, ``SSL_CONF_cmd``, OpenSSL's own
error queue with its data.  This
module declares them against the shared library that Python's own ``ssl``
module is linked to (on Debian 12, OpenSSL 3.0, the library of Debian's
nginx), found by loading ``_ssl`` and reading where its ``libssl`` lives, so
no compiler is needed at install time and mailfront runs on the same OpenSSL
as the nginx it stands in for.  OpenSSL 3.0 or later is required.

cffi's ABI mode resolves each function on first use, so a declaration that a
library lacks fails only when it is called; every one below exists in 3.0.
Only what the engine calls is declared, with the prototypes of the 3.0
headers; the macros it needs (``SSL_CTX_set_mode`` and the like) are
``SSL_CTX_ctrl`` calls with the header's numbers, named here.
"""

from __future__ import annotations

import ctypes.util
import os
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]

CDEF = """
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
typedef struct ssl_session_st SSL_SESSION;
typedef struct ssl_cipher_st SSL_CIPHER;
typedef struct ssl_conf_ctx_st SSL_CONF_CTX;
typedef struct bio_st BIO;
typedef struct bio_method_st BIO_METHOD;
typedef struct x509_st X509;
typedef struct X509_name_st X509_NAME;
typedef struct x509_store_st X509_STORE;
typedef struct x509_store_ctx_st X509_STORE_CTX;
typedef struct X509_crl_st X509_CRL;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct hmac_ctx_st HMAC_CTX;
typedef struct dh_st DH;
typedef struct stack_st_X509_NAME STACK_OF_X509_NAME;

unsigned long OpenSSL_version_num(void);
const char *OpenSSL_version(int type);

/* errors */
unsigned long ERR_get_error(void);
unsigned long ERR_peek_last_error(void);
unsigned long ERR_peek_error_data(const char **data, int *flags);
void ERR_clear_error(void);
void ERR_error_string_n(unsigned long e, char *buf, size_t len);
const char *X509_verify_cert_error_string(long n);

/* contexts */
const SSL_METHOD *TLS_server_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth);
void SSL_CTX_free(SSL_CTX *ctx);
uint64_t SSL_CTX_set_options(SSL_CTX *ctx, uint64_t op);
uint64_t SSL_CTX_get_options(const SSL_CTX *ctx);
long SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg);
long SSL_CTX_callback_ctrl(SSL_CTX *ctx, int cmd, void (*fp)(void));
int SSL_CTX_set_cipher_list(SSL_CTX *ctx, const char *str);
int SSL_CTX_use_certificate(SSL_CTX *ctx, X509 *x);
int SSL_CTX_use_PrivateKey(SSL_CTX *ctx, EVP_PKEY *pkey);
void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, int (*cb)(int, X509_STORE_CTX *));
int SSL_CTX_get_verify_mode(const SSL_CTX *ctx);
void SSL_CTX_set_verify_depth(SSL_CTX *ctx, int depth);
X509_STORE *SSL_CTX_get_cert_store(const SSL_CTX *ctx);
int SSL_CTX_add_client_CA(SSL_CTX *ctx, X509 *x);
void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx,
    int (*cb)(SSL *, const unsigned char **, unsigned char *,
              const unsigned char *, unsigned int, void *),
    void *arg);
int SSL_CTX_set_session_id_context(SSL_CTX *ctx, const unsigned char *sid_ctx,
    unsigned int sid_ctx_len);
long SSL_CTX_set_timeout(SSL_CTX *ctx, long t);
long SSL_CTX_get_timeout(const SSL_CTX *ctx);
void SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*cb)(SSL *, SSL_SESSION *));
void SSL_CTX_sess_set_remove_cb(SSL_CTX *ctx, void (*cb)(SSL_CTX *, SSL_SESSION *));
void SSL_CTX_sess_set_get_cb(SSL_CTX *ctx,
    SSL_SESSION *(*cb)(SSL *, const unsigned char *, int, int *));

SSL_CONF_CTX *SSL_CONF_CTX_new(void);
void SSL_CONF_CTX_free(SSL_CONF_CTX *cctx);
unsigned int SSL_CONF_CTX_set_flags(SSL_CONF_CTX *cctx, unsigned int flags);
void SSL_CONF_CTX_set_ssl_ctx(SSL_CONF_CTX *cctx, SSL_CTX *ctx);
int SSL_CONF_cmd(SSL_CONF_CTX *cctx, const char *cmd, const char *value);
int SSL_CONF_CTX_finish(SSL_CONF_CTX *cctx);

/* files */
BIO *BIO_new_file(const char *filename, const char *mode);
int BIO_free(BIO *a);
X509 *PEM_read_bio_X509_AUX(BIO *bp, X509 **x, void *cb, void *u);
X509 *PEM_read_bio_X509(BIO *bp, X509 **x, void *cb, void *u);
X509_CRL *PEM_read_bio_X509_CRL(BIO *bp, X509_CRL **x, void *cb, void *u);
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, void *cb, void *u);
DH *PEM_read_bio_DHparams(BIO *bp, DH **x, void *cb, void *u);
void DH_free(DH *dh);
void X509_free(X509 *a);
void X509_CRL_free(X509_CRL *a);
void EVP_PKEY_free(EVP_PKEY *pkey);
int i2d_X509(X509 *a, unsigned char **out);
X509_NAME *X509_get_subject_name(const X509 *x);
int X509_get_signature_nid(const X509 *x);
EVP_PKEY *X509_get0_pubkey(const X509 *x);
int EVP_PKEY_get_base_id(const EVP_PKEY *pkey);
int EVP_PKEY_get_bits(const EVP_PKEY *pkey);
const char *OBJ_nid2sn(int n);
int i2d_X509_NAME(const X509_NAME *a, unsigned char **out);
int X509_STORE_add_cert(X509_STORE *ctx, X509 *x);
int X509_STORE_add_crl(X509_STORE *ctx, X509_CRL *x);
int X509_STORE_set_flags(X509_STORE *ctx, unsigned long flags);

/* connections */
SSL *SSL_new(SSL_CTX *ctx);
void SSL_free(SSL *ssl);
void SSL_set_shutdown(SSL *ssl, int mode);
const BIO_METHOD *BIO_s_mem(void);
BIO *BIO_new(const BIO_METHOD *type);
long BIO_ctrl(BIO *bp, int cmd, long larg, void *parg);
int BIO_read(BIO *b, char *data, int dlen);
int BIO_write(BIO *b, const char *data, int dlen);
void SSL_set_bio(SSL *s, BIO *rbio, BIO *wbio);
void SSL_set_accept_state(SSL *s);
int SSL_do_handshake(SSL *s);
int SSL_read(SSL *ssl, char *buf, int num);
int SSL_write(SSL *ssl, const char *buf, int num);
int SSL_shutdown(SSL *s);
int SSL_get_error(const SSL *s, int ret_code);
int SSL_version(const SSL *ssl);
uint64_t SSL_get_options(const SSL *s);
const char *SSL_get_version(const SSL *s);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *s);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *c);
const char *SSL_CIPHER_get_version(const SSL_CIPHER *c);
int SSL_CIPHER_get_bits(const SSL_CIPHER *c, int *alg_bits);
X509 *SSL_get0_peer_certificate(const SSL *s);
X509 *SSL_get_certificate(const SSL *ssl);
long SSL_get_verify_result(const SSL *ssl);
int SSL_session_reused(const SSL *s);
const char *SSL_get_servername(const SSL *s, const int type);
void SSL_get0_alpn_selected(const SSL *ssl, const unsigned char **data, unsigned int *len);

/* session tickets (ngx_ssl_session_ticket_key_callback) */
int RAND_bytes(unsigned char *buf, int num);
const EVP_CIPHER *EVP_aes_128_cbc(void);
const EVP_CIPHER *EVP_aes_256_cbc(void);
const EVP_MD *EVP_sha256(void);
int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, void *impl,
    const unsigned char *key, const unsigned char *iv);
int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, void *impl,
    const unsigned char *key, const unsigned char *iv);
int HMAC_Init_ex(HMAC_CTX *ctx, const unsigned char *key, int len, const EVP_MD *md, void *impl);

/* the shared session cache (ngx_ssl_new_session, ngx_ssl_get_cached_session) */
int i2d_SSL_SESSION(SSL_SESSION *in, unsigned char **pp);
SSL_SESSION *d2i_SSL_SESSION(SSL_SESSION **a, const unsigned char **pp, long length);
const unsigned char *SSL_SESSION_get_id(const SSL_SESSION *s, unsigned int *len);
SSL_CTX *SSL_get_SSL_CTX(const SSL *ssl);
"""

# ssl.h, tls1.h, bio.h, x509.h, x509_vfy.h, err.h of OpenSSL 3.0
SSL_CTRL_SET_TMP_DH = 3
SSL_CTRL_MODE = 33
SSL_CTRL_SET_SESS_CACHE_SIZE = 42
SSL_CTRL_GET_SESS_CACHE_SIZE = 43
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_GET_SESS_CACHE_MODE = 45
SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB = 72
SSL_CTRL_CHAIN_CERT = 89
SSL_CTRL_SET_GROUPS_LIST = 92
SSL_CTRL_SET_MIN_PROTO_VERSION = 123
SSL_CTRL_SET_MAX_PROTO_VERSION = 124
BIO_CTRL_PENDING = 10

SSL_MODE_NO_AUTO_CHAIN = 0x8
SSL_MODE_RELEASE_BUFFERS = 0x10

SSL_OP_TLSEXT_PADDING = 1 << 4
SSL_OP_SAFARI_ECDHE_ECDSA_BUG = 1 << 6
SSL_OP_IGNORE_UNEXPECTED_EOF = 1 << 7
SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS = 1 << 11
SSL_OP_NO_TICKET = 1 << 14
SSL_OP_NO_COMPRESSION = 1 << 17
SSL_OP_PRIORITIZE_CHACHA = 1 << 21
SSL_OP_CIPHER_SERVER_PREFERENCE = 1 << 22
SSL_OP_NO_SSLv3 = 1 << 25
SSL_OP_NO_TLSv1 = 1 << 26
SSL_OP_NO_TLSv1_2 = 1 << 27
SSL_OP_NO_TLSv1_1 = 1 << 28
SSL_OP_NO_TLSv1_3 = 1 << 29
SSL_OP_NO_RENEGOTIATION = 1 << 30
SSL_OP_CRYPTOPRO_TLSEXT_BUG = 1 << 31
SSL_OP_ALL = (
    SSL_OP_CRYPTOPRO_TLSEXT_BUG
    | SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS
    | SSL_OP_TLSEXT_PADDING
    | SSL_OP_SAFARI_ECDHE_ECDSA_BUG
)

TLS1_VERSION = 0x0301
TLS1_1_VERSION = 0x0302
TLS1_2_VERSION = 0x0303
TLS1_3_VERSION = 0x0304

SSL_VERIFY_NONE = 0
SSL_VERIFY_PEER = 1

SSL_SESS_CACHE_OFF = 0x0
SSL_SESS_CACHE_SERVER = 0x2
SSL_SESS_CACHE_NO_AUTO_CLEAR = 0x80
SSL_SESS_CACHE_NO_INTERNAL_LOOKUP = 0x100
SSL_SESS_CACHE_NO_INTERNAL_STORE = 0x200
SSL_SESS_CACHE_NO_INTERNAL = SSL_SESS_CACHE_NO_INTERNAL_LOOKUP | SSL_SESS_CACHE_NO_INTERNAL_STORE

SSL_ERROR_WANT_READ = 2
SSL_ERROR_ZERO_RETURN = 6

SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2
TLSEXT_NAMETYPE_host_name = 0

SSL_CONF_FLAG_FILE = 0x2
SSL_CONF_FLAG_SERVER = 0x8
SSL_CONF_FLAG_SHOW_ERRORS = 0x10
SSL_CONF_FLAG_CERTIFICATE = 0x20

X509_V_FLAG_CRL_CHECK = 0x4
X509_V_FLAG_CRL_CHECK_ALL = 0x8
ERR_TXT_STRING = 0x2
# obj_mac.h: the key types PROXY v2's KEY_ALG names with their size
EVP_PKEY_RSA = 6
EVP_PKEY_EC = 408
SSL_SENT_SHUTDOWN = 1
SSL_RECEIVED_SHUTDOWN = 2
OPENSSL_VERSION = 0  # OpenSSL_version(): the "OpenSSL 3.0.x  date" text

# ERR_GET_LIB / ERR_GET_REASON of OpenSSL 3 (err.h)
ERR_LIB_PEM = 9
PEM_R_NO_START_LINE = 108


def err_lib(code: int) -> int:
    return (code >> 23) & 0xFF if not code & 0x80000000 else 2  # ERR_LIB_SYS


def err_reason(code: int) -> int:
    return code & 0x7FFFFF if not code & 0x80000000 else code & 0x7FFFFFFF


def _library_path() -> str:
    """The libssl that Python's ``ssl`` module runs on, else the system's."""
    import _ssl  # noqa: F401  (loads libssl into this process)

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "/libssl.so" in path and os.path.exists(path):
                    return path
    except OSError:
        pass
    found = ctypes.util.find_library("ssl")
    if found is None:
        raise ImportError("mailfront's TLS needs OpenSSL's libssl (3.0 or later): none found")
    return found


ffi = FFI()
ffi.cdef(CDEF)
LIBRARY = _library_path()
lib: Any = ffi.dlopen(LIBRARY)
if lib.OpenSSL_version_num() < 0x30000000:
    raise ImportError(
        f"mailfront's TLS needs OpenSSL 3.0 or later; {LIBRARY} is "
        + ffi.string(lib.OpenSSL_version(OPENSSL_VERSION)).decode("ascii", "replace")
    )
NULL = ffi.NULL


def version_text() -> str:
    """``OpenSSL_version(OPENSSL_VERSION)``, as ``nginx -V`` prints it."""
    return str(ffi.string(lib.OpenSSL_version(OPENSSL_VERSION)).decode("ascii", "replace"))


def text(ptr: Any) -> str:
    """A C string, or "" for NULL."""
    return "" if ptr == NULL else str(ffi.string(ptr).decode("utf-8", "replace"))


class Error(Exception):
    """A failed OpenSSL call; ``queue`` is OpenSSL's error queue as nginx prints it
    (``error:0A0000C1:SSL routines::no shared cipher``, with ``:data`` where there is some)."""

    def __init__(self, queue: list[str]) -> None:
        super().__init__(queue)
        self.queue = queue

    def __str__(self) -> str:
        return " ".join(self.queue)


_ERRBUF = ffi.new("char[]", 256)
_DATA = ffi.new("const char **")
_FLAGS = ffi.new("int *")


def drain() -> list[str]:
    """OpenSSL's error queue, emptied, each entry as ``ngx_ssl_error`` writes it."""
    parts: list[str] = []
    while True:
        code = lib.ERR_peek_error_data(_DATA, _FLAGS)
        if not code:
            return parts
        lib.ERR_error_string_n(code, _ERRBUF, 256)
        part = ffi.string(_ERRBUF).decode("utf-8", "replace")
        data = _DATA[0]
        if data != NULL and _FLAGS[0] & ERR_TXT_STRING:
            extra = ffi.string(data).decode("utf-8", "replace")
            if extra:
                part += ":" + extra
        parts.append(part)
        lib.ERR_get_error()


def error() -> Error:
    """The error queue, drained, as an :class:`Error`."""
    return Error(drain())


def queue_text(parts: list[str] | None = None) -> str:
    """`` (SSL: ...)``, nginx's tail after a failed call (the queue is drained), or ""."""
    if parts is None:
        parts = drain()
    return " (SSL: " + " ".join(parts) + ")" if parts else ""


def verify_error_text(code: int) -> str:
    """``X509_verify_cert_error_string``."""
    return text(lib.X509_verify_cert_error_string(code))


def ctx_ctrl(ctx: Any, cmd: int, larg: int = 0, parg: Any = NULL) -> int:
    return int(lib.SSL_CTX_ctrl(ctx, cmd, larg, parg))


def i2d(encode: Any, obj: Any) -> bytes:
    """The DER of ``obj`` by one of OpenSSL's ``i2d_*`` functions."""
    size = encode(obj, NULL)
    if size <= 0:
        raise error()
    buf = ffi.new("unsigned char[]", size)
    encode(obj, ffi.new("unsigned char **", buf))
    return bytes(ffi.buffer(buf, size))


def name_der(name: Any) -> bytes:
    """``i2d_X509_NAME``: a name's DER, as OpenSSL holds it (what X509_NAME_digest hashes)."""
    return i2d(lib.i2d_X509_NAME, name)


def der_of(x509: Any) -> bytes:
    """``i2d_X509``: a certificate's DER."""
    return i2d(lib.i2d_X509, x509)


__all__ = ["Error", "error", "ffi", "lib", "queue_text", "verify_error_text"]
