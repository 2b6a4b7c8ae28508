/* auth_throttle.c - sliding-window failure counts per user and per address. */
#include "auth_throttle.h"

#include <stdio.h>
#include <string.h>

struct slot {
    char key[THROTTLE_KEY_MAX + 3];   /* "u:" or "a:" + key */
    time_t t[THROTTLE_KEEP];          /* ring of failure times */
    unsigned head, n;
    time_t last;
};

static struct slot slots[THROTTLE_SLOTS];

static void mkkey(char *dst, size_t cap, enum throttle_kind k, const char *key)
{
    snprintf(dst, cap, "%c:%.*s", k == THROTTLE_USER ? 'u' : 'a', THROTTLE_KEY_MAX, key);
}

static struct slot *find(enum throttle_kind k, const char *key, int create)
{
    char full[sizeof slots[0].key];
    mkkey(full, sizeof full, k, key);
    struct slot *oldest = &slots[0];
    for (size_t i = 0; i < THROTTLE_SLOTS; i++) {
        if (slots[i].key[0] && !strcmp(slots[i].key, full)) return &slots[i];
        if (!slots[i].key[0]) { if (oldest->key[0]) oldest = &slots[i]; }
        else if (oldest->key[0] && slots[i].last < oldest->last) oldest = &slots[i];
    }
    if (!create) return 0;
    memset(oldest, 0, sizeof *oldest);
    memcpy(oldest->key, full, sizeof full);
    return oldest;
}

unsigned throttle_count(enum throttle_kind k, const char *key, time_t now)
{
    struct slot *s = find(k, key, 0);
    unsigned c = 0;
    if (!s) return 0;
    for (unsigned i = 0; i < s->n; i++)
        if (s->t[i] > now - THROTTLE_WINDOW) c++;
    return c;
}

void throttle_fail(enum throttle_kind k, const char *key, time_t now)
{
    struct slot *s = find(k, key, 1);
    s->t[s->head] = now;
    s->head = (s->head + 1) % THROTTLE_KEEP;
    if (s->n < THROTTLE_KEEP) s->n++;
    s->last = now;
}

void throttle_clear(enum throttle_kind k, const char *key)
{
    struct slot *s = find(k, key, 0);
    if (s) memset(s, 0, sizeof *s);
}

static int step(unsigned n, unsigned start)
{
    if (n < start) return 0;
    unsigned d = n - start;
    return d >= 3 ? 8 : 1 << d;
}

int throttle_delay(const char *user, const char *addr, time_t now)
{
    unsigned nu = throttle_count(THROTTLE_USER, user, now);
    unsigned na = addr[0] ? throttle_count(THROTTLE_ADDR, addr, now) : 0;
    if (nu >= 10 || na >= 30) return -1;
    int du = step(nu, 3), da = step(na, 10);
    return du > da ? du : da;
}

void throttle_reset(void) { memset(slots, 0, sizeof slots); }
