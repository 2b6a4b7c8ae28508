/* auth_throttle.h - auth-checker's memory of recent failed logins, per user name
 * and per client address, over a sliding window.
 *
 * Numbers (window THROTTLE_WINDOW = 15 minutes):
 *   per user:    3+ failures -> each new attempt waits 1, 2, 4, then 8 s
 *                before it is verified; 10+ failures -> Rtemp, not verified.
 *   per address: 10+ failures -> 1, 2, 4, 8 s; 30+ -> Rtemp.
 * A success clears the user's failures (not the address's). The table holds
 * THROTTLE_SLOTS keys; when full, the key idle longest is forgotten. */
#ifndef POSTERN_AUTH_THROTTLE_H
#define POSTERN_AUTH_THROTTLE_H

#include <time.h>

#define THROTTLE_WINDOW 900
#define THROTTLE_SLOTS 4096
#define THROTTLE_KEEP 32         /* failure times remembered per key */
#define THROTTLE_KEY_MAX 80

enum throttle_kind { THROTTLE_USER = 0, THROTTLE_ADDR };

/* failures of key within the window ending at now */
unsigned throttle_count(enum throttle_kind k, const char *key, time_t now);
void throttle_fail(enum throttle_kind k, const char *key, time_t now);
void throttle_clear(enum throttle_kind k, const char *key);
/* seconds to wait before verifying, or -1: refuse now (Rtemp) */
int throttle_delay(const char *user, const char *addr, time_t now);
void throttle_reset(void);   /* forget everything (tests) */

#endif
