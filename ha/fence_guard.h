/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The fence guard: a small process, separate from the agent, that stops the local PostgreSQL
 * when the lease holder stops feeding it (design rule 2, "fences outlive their owner"). The
 * agent that holds the leader key arms it after every successful renewal with "the lease is
 * valid until monotonic T"; when the guard's deadline (T minus the safety margin) passes with
 * no new feed, because the agent hangs (SIGSTOP, a stuck loop) or died (kill -9), the guard
 * sends SIGQUIT (immediate shutdown) to the postmaster named by <pg_data>/postmaster.pid, so
 * that the other members may promote once the lease has expired. A disarmed guard never kills.
 *
 * The guard listens on an abstract unix socket named after the data directory, so an agent
 * restarted before the deadline finds it and takes it over (its primary survives); only peers
 * of the same uid (or root) are served. It exits when it is disarmed (or has fired) and no agent
 * is connected. Interface: fence_guard_open, fence_guard_arm, fence_guard_disarm,
 * fence_guard_poll, fence_guard_query, fence_guard_close; fence_guard_pidfile_target for the
 * postmaster check.
 */
#ifndef PGPILOT_HA_FENCE_GUARD_H
#define PGPILOT_HA_FENCE_GUARD_H

#include "protocol/bytes.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FENCE_GUARD_MSG_MAX 256

typedef struct FenceGuard FenceGuard;

/* What a guard reports about itself. */
typedef struct FenceGuardState {
	pid_t pid;           /* the guard process */
	bool armed;          /* it will stop PostgreSQL at deadline_ms unless fed */
	int64_t deadline_ms; /* CLOCK_MONOTONIC ms (ha_now_ms) of the stop; 0 when disarmed */
	int fired;           /* how many times it stopped PostgreSQL since it started */
	char last[FENCE_GUARD_MSG_MAX]; /* its last event, "" when none */
} FenceGuardState;

/*
 * Connect to the guard of <pg_data> or, when none answers, start one (a double fork: the guard
 * is a child of init, in its own session, with every other descriptor closed; it does not share
 * the agent's fate). <took_over> (may be NULL) is set when an existing guard was found; *state
 * (may be NULL) gets its state as it reported it on connect. Returns NULL with a message in
 * <err> on failure (the caller logs it and runs without a guard).
 */
FenceGuard *fence_guard_open(const char *pg_data, bool *took_over, FenceGuardState *state,
			     char *err, size_t errlen);

/* Feed: stop PostgreSQL at <deadline_ms> (monotonic) unless fed again. False when the guard is
 * gone (the caller reopens it). */
bool fence_guard_arm(FenceGuard *g, int64_t deadline_ms) _MUSTCHECK;
/* Disarm: never stop PostgreSQL until armed again. False when the guard is gone. */
bool fence_guard_disarm(FenceGuard *g) _MUSTCHECK;
/* Is it armed as far as this side knows (the last arm/disarm sent)? */
bool fence_guard_is_armed(const FenceGuard *g);

/*
 * Read what the guard sent without blocking: each event line ("fired: ...") is copied to
 * <msg> (the last one wins; "" when none). Returns false when the guard has gone away.
 */
bool fence_guard_poll(FenceGuard *g, char *msg, size_t len) _MUSTCHECK;

/* Ask the guard for its state and wait up to <timeout_ms> for the answer (tests, SHOW HA). */
bool fence_guard_query(FenceGuard *g, FenceGuardState *st, int timeout_ms) _MUSTCHECK;

pid_t fence_guard_pid(const FenceGuard *g);

/* Close this side. The guard lives on: armed, it fires at its deadline; disarmed, it exits. */
void fence_guard_close(FenceGuard *g);

/*
 * The postmaster the guard would stop: the PID on the first line of <pg_data>/postmaster.pid,
 * only when it is a live process named postgres (or postmaster), owned by the data directory's
 * owner, whose working directory is <pg_data>. Returns it, or 0 with the reason in <why>.
 */
pid_t fence_guard_pidfile_target(const char *pg_data, char *why, size_t len);

#endif
