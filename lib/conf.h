/* conf.h - the configuration file reader: "key = value" lines, '#' comments,
 * blank lines ignored. Every error names the file, the line and what is
 * wrong: "conf/postern.conf:12: max_recipients: not a number". */
#ifndef POSTERN_CONF_H
#define POSTERN_CONF_H

#include <stddef.h>

#define CONF_LINE_MAX 4096
#define CONF_ERR_MAX 512

/* Called once per setting. Return 1 to go on, or 0 after writing what is
 * wrong (without file:line, the reader adds it) into why[0..whylen). */
typedef int conf_setting_fn(void *ctx, const char *key, const char *value,
                            char *why, size_t whylen);

/* Parse path. Returns 1, or 0 with err holding "path:line: what" (or
 * "path: <strerror>" when it cannot be read; errno is then set). */
int conf_parse_file(const char *path, conf_setting_fn *fn, void *ctx,
                    char *err, size_t errlen);
/* Same on an in-memory text; name is used in messages. */
int conf_parse_text(const char *name, const char *text, size_t len,
                    conf_setting_fn *fn, void *ctx, char *err, size_t errlen);

/* Value helpers for conf_setting_fn: 1 ok, 0 with why filled. */
int conf_uint(const char *value, unsigned long long min, unsigned long long max,
              unsigned long long *out, char *why, size_t whylen);
int conf_bool(const char *value, int *out, char *why, size_t whylen);
/* A descriptor number given on a command line (-d FD): decimal digits only;
 * 1 with *fd set, 0 otherwise. */
int conf_fd(const char *value, int *fd);
/* Sizes with an optional k/M/G suffix (powers of 1024). */
int conf_size(const char *value, unsigned long long max, unsigned long long *out,
              char *why, size_t whylen);
/* Durations with an optional s/m/h/d suffix, result in seconds. */
int conf_duration(const char *value, unsigned long long max, unsigned long long *out,
                  char *why, size_t whylen);

#endif
