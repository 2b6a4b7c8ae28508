/* ref_header.h - the fuzz targets' reference for how smtp_body ends a
 * header section: at its blank line, or at its first line that is not a
 * field ("name:" with the name printable ASCII without the colon, white
 * space allowed before the colon, the colon among the first
 * SMTP_BODY_NAME_MAX octets) nor a continuation (white space first, after
 * a field), where a blank line is put in front of that line; except a
 * first line that starts "From " (an mbox line), which gets
 * SMTP_BODY_MBOX_TAG in front and counts as a field. */
#ifndef POSTERN_FUZZ_REF_HEADER_H
#define POSTERN_FUZZ_REF_HEADER_H

#include <stddef.h>
#include <string.h>

#include "smtp_body.h"

#define REF_MBOX_TAG_LEN (sizeof SMTP_BODY_MBOX_TAG - 1)

/* where in m (the stored form, LF line ends) the blank line goes, or -1;
 * *mbox: whether the tag goes before the first line */
static long ref_blank_at(const char *m, size_t n, int *mbox)
{
    int fields = 0;
    *mbox = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && m[e] != '\n') e++;
        if (e == i) return -1;                       /* the blank line */
        int field = 0;
        if (m[i] == ' ' || m[i] == '\t') {
            field = fields;
        } else {
            size_t k = i;
            while (k < e && k - i < SMTP_BODY_NAME_MAX && m[k] > ' ' && m[k] < 0x7f && m[k] != ':') k++;
            if (k > i)
                while (k < e && k - i < SMTP_BODY_NAME_MAX && (m[k] == ' ' || m[k] == '\t')) k++;
            if (k > i && k < e && k - i < SMTP_BODY_NAME_MAX && m[k] == ':') field = fields = 1;
        }
        if (!field && !fields && e - i >= 5 && !memcmp(m + i, "From ", 5)) field = fields = *mbox = 1;
        if (!field) return (long)i;
        i = e + 1;
    }
    return -1;
}

/* put the blank line and the mbox tag into m (length *n, room for
 * 1 + REF_MBOX_TAG_LEN more octets) */
static void ref_blank_insert(char *m, size_t *n)
{
    int mbox;
    long at = ref_blank_at(m, *n, &mbox);
    if (at >= 0) {
        memmove(m + at + 1, m + at, *n - (size_t)at);
        m[at] = '\n';
        (*n)++;
    }
    if (mbox) {
        memmove(m + REF_MBOX_TAG_LEN, m, *n);
        memcpy(m, SMTP_BODY_MBOX_TAG, REF_MBOX_TAG_LEN);
        *n += REF_MBOX_TAG_LEN;
    }
}

#endif
