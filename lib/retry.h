/* retry.h - when to try a recipient again after a temporary failure, and
 * when a temporary failure has become permanent.
 *
 * The schedule is qmail's: the next try is at
 *     birth + (isqrt(now - birth) + step)^2
 * so the gaps grow with the square root of the message's age (step 20 s:
 * about 7 min, 27 min, 1 h, 1.8 h, 2.8 h after birth ...), each gap capped at
 * RETRY_GAP_MAX (4 h) and never before now + RETRY_GAP_MIN. No try is
 * scheduled past birth + lifetime: the last one happens at the expiry, and a
 * temporary failure at or after it is final (retry_expired). */
#ifndef POSTERN_RETRY_H
#define POSTERN_RETRY_H

#include <time.h>

#define RETRY_STEP 20               /* seconds, the k of the formula */
#define RETRY_GAP_MIN 60            /* never sooner than this after a failure */
#define RETRY_GAP_MAX (4 * 3600)    /* never later than this after a failure */
#define RETRY_DELAY_NOTICE (4 * 3600) /* age after which a DELAY DSN is due */

/* next try after a temporary failure at now, for a message born at birth
 * that lives lifetime seconds. now < birth (clock went back) counts as age 0. */
time_t retry_next(time_t birth, time_t now, unsigned long long lifetime);

/* 1 if a temporary failure at now is final (now >= birth + lifetime) */
int retry_expired(time_t birth, time_t now, unsigned long long lifetime);

/* 1 if a DELAY notice is due for a recipient whose try scheduled at
 * scheduled (its next_try before this failure; 0 = first try) failed at now:
 * the first failure at or after birth + RETRY_DELAY_NOTICE. scheduled tells
 * when the previous failure was: retry_next grows with it, so it came
 * before the mark iff scheduled is at most what a failure just before the
 * mark schedules (a schedule capped at the expiry cannot tell: not due). */
int retry_delay_due(time_t birth, time_t scheduled, time_t now, unsigned long long lifetime);

/* integer square root (floor) */
unsigned long long retry_isqrt(unsigned long long v);

#endif
