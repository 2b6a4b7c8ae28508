/* check_sasl.c - strict base64 and the PLAIN / LOGIN responses. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "sasl.h"

START_TEST(test_base64)
{
    unsigned char out[64];
    size_t n;
    ck_assert(sasl_base64_decode("", 0, out, sizeof out, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert(sasl_base64_decode("YWxpY2U=", 8, out, sizeof out, &n));
    ck_assert_uint_eq(n, 5);
    ck_assert(!memcmp(out, "alice", 5));
    ck_assert(sasl_base64_decode("c2VjcmV0", 8, out, sizeof out, &n));
    ck_assert(!memcmp(out, "secret", 6));
    ck_assert(sasl_base64_decode("YQ==", 4, out, sizeof out, &n));
    ck_assert_uint_eq(n, 1);
    ck_assert(sasl_base64_decode("+/+/", 4, out, sizeof out, &n));
    ck_assert_uint_eq(out[0], 0xfb);
}
END_TEST

START_TEST(test_plain_and_login)
{
    struct sasl_cred c;
    /* "\0alice\0secret" and "alice\0alice\0secret" */
    ck_assert_int_eq(sasl_plain("AGFsaWNlAHNlY3JldA==", 20, &c), SASL_OK);
    ck_assert_str_eq(c.user, "alice");
    ck_assert_uint_eq(c.passlen, 6);
    ck_assert(!memcmp(c.pass, "secret", 6));
    sasl_wipe(&c);
    ck_assert_uint_eq(c.passlen, 0);
    ck_assert_int_eq(sasl_plain("YWxpY2UAYWxpY2UAc2VjcmV0", 24, &c), SASL_OK);
    ck_assert_str_eq(c.user, "alice");
    char v[16];
    size_t n;
    ck_assert_int_eq(sasl_login_field("YWxpY2U=", 8, v, sizeof v, &n), SASL_OK);
    ck_assert_str_eq(v, "alice");
    ck_assert_uint_eq(n, 5);
}
END_TEST

START_TEST(test_bad_input)
{
    unsigned char out[8];
    size_t n;
    struct sasl_cred c;
    const char *bad[] = { "YWxpY2U", "YW=pY2U=", "YWxp Y2U=", "YWxpY2U==", "=AAA", "YR==", "YWE=YWE=", "!!!!" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!sasl_base64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n), "%s", bad[i]);
        ck_assert_int_eq(errno, EINVAL);
    }
    ck_assert(!sasl_base64_decode("YWFhYWFhYWFh", 12, out, sizeof out, &n));   /* 9 > 8 */
    ck_assert_int_eq(errno, ENOSPC);
    ck_assert_int_eq(sasl_plain("!!!!", 4, &c), SASL_BAD_BASE64);
    ck_assert_int_eq(sasl_plain("YWxpY2U=", 8, &c), SASL_BAD_FORMAT);           /* no NULs */
    ck_assert_int_eq(sasl_plain("AABzZWNyZXQ=", 12, &c), SASL_BAD_FORMAT);      /* empty user */
    ck_assert_int_eq(sasl_plain("AGFsaWNlAA==", 12, &c), SASL_BAD_FORMAT);      /* empty password */
    ck_assert_int_eq(sasl_plain("Ym9iAGFsaWNlAHNlY3JldA==", 24, &c), SASL_AUTHZID); /* bob for alice */
    ck_assert_int_eq(sasl_plain("AGEAYgBj", 8, &c), SASL_BAD_FORMAT);            /* \0a\0b\0c: NUL in password */
    char v[4];
    ck_assert_int_eq(sasl_login_field("YWxpY2U=", 8, v, sizeof v, &n), SASL_TOO_LONG);
    ck_assert_int_eq(sasl_login_field("", 0, v, sizeof v, &n), SASL_BAD_FORMAT);
    ck_assert_int_eq(sasl_login_field("AA==", 4, v, sizeof v, &n), SASL_BAD_FORMAT);
}
END_TEST

/* the base64 of the k octets of raw into b64, which holds 4 octets for
 * every 3 begun: its length */
static size_t b64_encode(const unsigned char *raw, size_t k, char *b64)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < k; i += 3) {
        unsigned w = (unsigned)raw[i] << 16 | (i + 1 < k ? (unsigned)raw[i + 1] << 8 : 0) | (i + 2 < k ? raw[i + 2] : 0);
        b64[o++] = tab[(w >> 18) & 63];
        b64[o++] = tab[(w >> 12) & 63];
        b64[o++] = i + 1 < k ? tab[(w >> 6) & 63] : '=';
        b64[o++] = i + 2 < k ? tab[w & 63] : '=';
    }
    return o;
}

START_TEST(test_limits)
{
    static char b64[SASL_LINE_MAX + 8];
    static unsigned char raw[SASL_LINE_MAX];
    struct sasl_cred c;
    /* "\0" + 256 x 'u' + "\0p": the user is one over */
    size_t k = 0;
    raw[k++] = 0;
    memset(raw + k, 'u', 256);
    k += 256;
    raw[k++] = 0;
    raw[k++] = 'p';
    size_t o = b64_encode(raw, k, b64);
    ck_assert_int_eq(sasl_plain(b64, o, &c), SASL_TOO_LONG);
    /* 255 is fine */
    raw[256] = 0;
    raw[257] = 'p';
    k = 258;
    o = b64_encode(raw, k, b64);
    ck_assert_int_eq(sasl_plain(b64, o, &c), SASL_OK);
    ck_assert_uint_eq(c.userlen, 255);
    /* a line past SASL_LINE_MAX */
    memset(b64, 'A', sizeof b64);
    ck_assert_int_eq(sasl_plain(b64, SASL_LINE_MAX + 4, &c), SASL_TOO_LONG);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sasl");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_base64);
    tcase_add_test(core, test_plain_and_login);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_bad_input);
    tcase_add_test(limits, test_limits);
    suite_add_tcase(s, limits);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
