/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Process-wide controls shared by the admin console and signal handlers: reload, pause,
 * resume, shutdown. Implemented in main.c.
 */
#ifndef PGPILOT_POOLER_CONTROL_H
#define PGPILOT_POOLER_CONTROL_H

#include "protocol/bytes.h"
#include "pooler/objects.h"

/* Reload the configuration file; on error keep the old one and say why in err. */
bool pooler_reload(char *err, size_t errlen) _MUSTCHECK;

typedef enum ShutdownMode {
	SHUTDOWN_GRACEFUL,  /* SIGTERM: stop accepting, wait for clients to leave */
	SHUTDOWN_FAST,	    /* SIGINT / SHUTDOWN: wait for linked servers, then exit */
	SHUTDOWN_IMMEDIATE, /* SIGQUIT: exit now */
} ShutdownMode;
void pooler_shutdown(ShutdownMode mode);
/* The janitor asks whether a shutdown in progress can finish now. */
void main_check_shutdown(void);

/* PAUSE / RESUME: db NULL = every database. */
void pooler_pause(Database *db);
void pooler_resume(Database *db);

/* Process start time, for SHOW STATE / SHOW VERSION. */
extern usec_t pooler_start_time;

#endif
