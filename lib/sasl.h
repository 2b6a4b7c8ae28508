/* sasl.h - the server side of SASL PLAIN (RFC 4616) and LOGIN as SMTP AUTH
 * (RFC 4954) carries them: strict base64 (RFC 4648, padding required, no
 * whitespace) and the PLAIN message "authzid NUL authcid NUL passwd". */
#ifndef POSTERN_SASL_H
#define POSTERN_SASL_H

#include <stddef.h>

#define SASL_LINE_MAX 2048        /* one base64 response line, without CRLF */
#define SASL_USER_MAX 255         /* as AUTH_USER_MAX */
#define SASL_PASS_MAX 1024        /* as AUTH_PASS_MAX */

/* Decode src[0..len) into dst[0..cap): 1 and *outlen, or 0 with EINVAL
 * (not base64: bad character, bad padding, length not a multiple of 4, or
 * non-zero pad bits) / ENOSPC (dst too small). "" decodes to "". */
int sasl_base64_decode(const char *src, size_t len, unsigned char *dst, size_t cap, size_t *outlen);

struct sasl_cred {
    char user[SASL_USER_MAX + 1];     /* NUL-terminated; holds no NUL */
    size_t userlen;
    char pass[SASL_PASS_MAX + 1];
    size_t passlen;
};

enum sasl_result {
    SASL_OK = 0,
    SASL_BAD_BASE64,      /* 501 5.5.2 */
    SASL_BAD_FORMAT,      /* not authzid NUL authcid NUL passwd, empty name: 501 5.5.2 */
    SASL_TOO_LONG,        /* a field past its bound: 501 5.5.2 */
    SASL_AUTHZID          /* authzid given and not the authcid: 535 5.7.8 */
};

/* The PLAIN response (base64 text b64[0..len)) into c. */
enum sasl_result sasl_plain(const char *b64, size_t len, struct sasl_cred *c);
/* One LOGIN step (user name or password, base64) into dst[0..cap) NUL-
 * terminated, *outlen without it; the value must not hold NUL. */
enum sasl_result sasl_login_field(const char *b64, size_t len, char *dst, size_t cap, size_t *outlen);
void sasl_wipe(struct sasl_cred *c);

#endif
