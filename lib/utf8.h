/* utf8.h - validating UTF-8 (for SMTPUTF8 addresses, SMTP command lines
 * and header values a DSN may carry). */
#ifndef POSTERN_UTF8_H
#define POSTERN_UTF8_H

#include <stddef.h>

/* length (2..4) of one valid non-ASCII UTF-8 character at s[0..n), or 0:
 * no overlong forms, surrogates, code points past U+10FFFF or C1 controls */
size_t utf8_char(const unsigned char *s, size_t n);
/* 1 if s[0..n) is ASCII and valid UTF-8 characters (utf8_char) only */
int utf8_valid(const char *s, size_t n);

#endif
