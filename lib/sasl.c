/* sasl.c - strict base64 and the SASL PLAIN / LOGIN responses. */
#include "sasl.h"

#include <errno.h>
#include <string.h>

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int sasl_base64_decode(const char *src, size_t len, unsigned char *dst, size_t cap, size_t *outlen)
{
    size_t o = 0;
    *outlen = 0;
    if (len % 4) { errno = EINVAL; return 0; }
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)src[i + (size_t)k];
            if (c == '=') {
                /* only in the last group, only as its last one or two */
                if (i + 4 != len || k < 2) { errno = EINVAL; return 0; }
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad) { errno = EINVAL; return 0; }   /* data after '=' */
            v[k] = b64val(c);
            if (v[k] < 0) { errno = EINVAL; return 0; }
        }
        size_t n = 3 - (size_t)pad;
        unsigned long w = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
                          ((unsigned long)v[2] << 6) | (unsigned long)v[3];
        /* the bits under the padding must be zero (canonical encoding) */
        if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))) { errno = EINVAL; return 0; }
        if (n > cap - o) { errno = ENOSPC; return 0; }
        unsigned char b[3] = { (unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w };
        memcpy(dst + o, b, n);
        o += n;
    }
    *outlen = o;
    return 1;
}

enum sasl_result sasl_plain(const char *b64, size_t len, struct sasl_cred *c)
{
    unsigned char raw[SASL_USER_MAX * 2 + SASL_PASS_MAX + 8];
    size_t n;
    memset(c, 0, sizeof *c);
    if (len > SASL_LINE_MAX) return SASL_TOO_LONG;
    if (!sasl_base64_decode(b64, len, raw, sizeof raw, &n)) {
        int e = errno;
        explicit_bzero(raw, sizeof raw);    /* what was decoded before the error */
        return e == ENOSPC ? SASL_TOO_LONG : SASL_BAD_BASE64;
    }
    unsigned char *z1 = memchr(raw, 0, n);
    unsigned char *z2 = z1 ? memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - raw)) : NULL;
    enum sasl_result r = SASL_OK;
    if (!z1 || !z2) { r = SASL_BAD_FORMAT; goto out; }
    size_t zlen = (size_t)(z1 - raw), ulen = (size_t)(z2 - z1 - 1), plen = n - (size_t)(z2 + 1 - raw);
    if (!ulen || !plen) { r = SASL_BAD_FORMAT; goto out; }
    if (ulen > SASL_USER_MAX || plen > SASL_PASS_MAX || zlen > SASL_USER_MAX) { r = SASL_TOO_LONG; goto out; }
    if (memchr(z2 + 1, 0, plen)) { r = SASL_BAD_FORMAT; goto out; }
    if (zlen && (zlen != ulen || memcmp(raw, z1 + 1, ulen))) { r = SASL_AUTHZID; goto out; }
    memcpy(c->user, z1 + 1, ulen);
    c->userlen = ulen;
    memcpy(c->pass, z2 + 1, plen);
    c->passlen = plen;
out:
    explicit_bzero(raw, sizeof raw);    /* a memset of a dead array may be left out */
    return r;
}

enum sasl_result sasl_login_field(const char *b64, size_t len, char *dst, size_t cap, size_t *outlen)
{
    size_t n;
    *outlen = 0;
    if (!cap) return SASL_TOO_LONG;
    if (len > SASL_LINE_MAX) return SASL_TOO_LONG;
    if (!sasl_base64_decode(b64, len, (unsigned char *)dst, cap - 1, &n)) {
        int e = errno;
        dst[0] = 0;
        return e == ENOSPC ? SASL_TOO_LONG : SASL_BAD_BASE64;
    }
    dst[n] = 0;
    if (!n || memchr(dst, 0, n)) { memset(dst, 0, cap); return SASL_BAD_FORMAT; }
    *outlen = n;
    return SASL_OK;
}

void sasl_wipe(struct sasl_cred *c)
{
    volatile unsigned char *p = (volatile unsigned char *)c;
    for (size_t i = 0; i < sizeof *c; i++) p[i] = 0;
}
