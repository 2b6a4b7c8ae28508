/* fuzz_sasl.c - libFuzzer target: SASL PLAIN / LOGIN decoding (lib/sasl,
 * which SMTP AUTH and POP3 AUTH both use), checked against a small
 * reference decoder of strict RFC 4648 base64: sasl accepts exactly what
 * the reference accepts, with the same octets. PLAIN results must be
 * bounded, NUL-free names that match the decoded message. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int val(unsigned char c)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(al, c) : NULL;
    return p ? (int)(p - al) : -1;
}

/* strict: length % 4 == 0, '=' only as the last one or two, pad bits zero */
static int ref_decode(const unsigned char *s, size_t len, unsigned char *dst, size_t *outlen)
{
    size_t o = 0;
    if (len % 4) return 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == len && k >= 2 && (k == 3 || s[i + 3] == '=')) { pad++; v[k] = 0; continue; }
            if (pad || (v[k] = val(s[i + k])) < 0) return 0;
        }
        unsigned long w = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) | ((unsigned long)v[2] << 6) | (unsigned long)v[3];
        if (pad == 1 && (w & 0xff)) return 0;
        if (pad == 2 && (w & 0xffff)) return 0;
        dst[o++] = (unsigned char)(w >> 16);
        if (pad < 2) dst[o++] = (unsigned char)(w >> 8);
        if (pad < 1) dst[o++] = (unsigned char)w;
    }
    *outlen = o;
    return 1;
}

static unsigned char ref[8192], got[8192];
static struct sasl_cred cred;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8000) return 0;
    const char *s = (const char *)data;
    size_t rl = 0, gl = 0;
    int r = ref_decode(data, size, ref, &rl);
    int g = sasl_base64_decode(s, size, got, sizeof got, &gl);
    if (r != g || (r && (rl != gl || memcmp(ref, got, rl)))) __builtin_trap();
    /* a too small buffer is refused, never overrun */
    if (r && rl) {
        unsigned char small[8];
        size_t sl;
        if (rl > sizeof small && sasl_base64_decode(s, size, small, sizeof small, &sl)) __builtin_trap();
    }

    enum sasl_result pr = sasl_plain(s, size, &cred);
    if (pr == SASL_OK) {
        if (!r || !cred.userlen || cred.userlen > SASL_USER_MAX || cred.passlen > SASL_PASS_MAX
            || cred.user[cred.userlen] || cred.pass[cred.passlen] || memchr(cred.user, 0, cred.userlen)
            || memchr(cred.pass, 0, cred.passlen))
            __builtin_trap();
        /* the decoded message ends with NUL user NUL pass */
        if (rl < cred.userlen + cred.passlen + 2
            || memcmp(ref + rl - cred.passlen, cred.pass, cred.passlen)
            || memcmp(ref + rl - cred.passlen - 1 - cred.userlen, cred.user, cred.userlen))
            __builtin_trap();
    } else if (pr == SASL_BAD_BASE64 && r) {
        __builtin_trap();
    }
    sasl_wipe(&cred);

    char f[300];
    size_t fl;
    if (sasl_login_field(s, size, f, sizeof f, &fl) == SASL_OK) {
        if (!r || fl >= sizeof f || f[fl] || memchr(f, 0, fl) || fl != rl || memcmp(f, ref, fl)) __builtin_trap();
    }
    return 0;
}
