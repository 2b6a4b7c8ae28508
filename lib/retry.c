/* retry.c - the retry schedule (see retry.h). */
#include "retry.h"

#include <stdint.h>

unsigned long long retry_isqrt(unsigned long long v)
{
    unsigned long long r = 0, bit = 1ULL << 62;
    while (bit > v) bit >>= 2;
    while (bit) {
        if (v >= r + bit) { v -= r + bit; r = (r >> 1) + bit; }
        else r >>= 1;
        bit >>= 2;
    }
    return r;
}

time_t retry_next(time_t birth, time_t now, unsigned long long lifetime)
{
    unsigned long long age = now > birth ? (unsigned long long)(now - birth) : 0;
    if (age > (1ULL << 40)) age = 1ULL << 40;        /* keep the square in range */
    unsigned long long root = retry_isqrt(age) + RETRY_STEP;
    unsigned long long at = root * root;             /* seconds after birth */
    unsigned long long gap = at > age ? at - age : 0;
    if (gap < RETRY_GAP_MIN) gap = RETRY_GAP_MIN;
    if (gap > RETRY_GAP_MAX) gap = RETRY_GAP_MAX;
    time_t next = now + (time_t)gap;
    if (lifetime < (1ULL << 40) && birth > 0) {
        time_t end = birth + (time_t)lifetime;
        if (next > end) next = end > now ? end : now + RETRY_GAP_MIN;
    }
    return next;
}

int retry_expired(time_t birth, time_t now, unsigned long long lifetime)
{
    if (now <= birth) return 0;
    return (unsigned long long)(now - birth) >= lifetime;
}

int retry_delay_due(time_t birth, time_t scheduled, time_t now, unsigned long long lifetime)
{
    time_t mark = birth + RETRY_DELAY_NOTICE;
    if (now < mark) return 0;
    if (scheduled < mark) return 1;
    if (lifetime < (1ULL << 40) && birth > 0 && scheduled >= birth + (time_t)lifetime) return 0;
    return scheduled <= retry_next(birth, mark - 1, lifetime);
}
