/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Integration driver for the HA agent: runs one HaAgent from a key=value file (the [cluster]
 * keys) on its own libevent loop and prints what the pooler would see, one line per event:
 *   LOG <level> <message> / VIEW leader=<name> members=<name>:<role>:<up|down>,... /
 *   WRITES allowed|stopped / PROMOTED <leader>
 * SIGTERM stops it gracefully (ha_agent_stop), SIGINT at once. Used by test_ha_agent_smoke.py.
 */
#include "ha/agent.h"

#include <event2/event.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct event_base *base;
static HaAgent *agent;

static void on_view(void *arg, const HaCluster *v)
{
	printf("VIEW leader=%s members=", v->leader[0] ? v->leader : "-");
	for (int i = 0; i < v->n_members; i++) {
		const HaMember *m = &v->members[i];

		printf("%s%s:%s:%s:%llu", i ? "," : "", m->name,
		       m->state == HA_PG_RUNNING ? (m->in_recovery ? "replica" : "primary")
						 : ha_pg_state_name(m->state),
		       m->healthy ? "up" : "down", (unsigned long long)ha_member_lsn(m));
	}
	printf(" optime=%llu\n", (unsigned long long)v->status_optime);
	fflush(stdout);
}

static void on_writes(void *arg, bool allowed)
{
	printf("WRITES %s\n", allowed ? "allowed" : "stopped");
	fflush(stdout);
}

static void on_promoted(void *arg, const HaCluster *v)
{
	printf("PROMOTED %s\n", v->leader);
	fflush(stdout);
}

static void on_log(void *arg, int level, const char *msg)
{
	printf("LOG %d %s\n", level, msg);
	fflush(stdout);
}

static void stopped(void *arg)
{
	event_base_loopbreak(base);
}

static void sig_cb(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGTERM)
		ha_agent_stop(agent, stopped, NULL);
	else
		event_base_loopbreak(base);
}

static void kv_show(void *arg, const char *k, const char *v)
{
	printf("SHOW %s=%s\n", k, v);
}

int main(int argc, char **argv)
{
	HaConfig cfg;
	HaAgentCallbacks cb = {on_view, on_writes, on_promoted, on_log};
	char line[2048], err[1024];
	struct event *term, *intr;
	FILE *f;
	int n = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: haprobe <config file>\n");
		return 2;
	}
	f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	ha_config_init(&cfg);
	while (fgets(line, sizeof(line), f)) {
		char *eq, *k = line, *v, *end;

		n++;
		line[strcspn(line, "\r\n")] = '\0';
		while (*k == ' ' || *k == '\t')
			k++;
		if (!*k || *k == '#' || *k == ';' || *k == '[')
			continue;
		eq = strchr(k, '=');
		if (!eq) {
			fprintf(stderr, "%s:%d: missing '='\n", argv[1], n);
			return 2;
		}
		*eq = '\0';
		v = eq + 1;
		for (end = eq; end > k && (end[-1] == ' ' || end[-1] == '\t'); end--)
			end[-1] = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		if (!ha_config_set(&cfg, k, v, err, sizeof(err))) {
			fprintf(stderr, "%s:%d: %s\n", argv[1], n, err);
			return 2;
		}
	}
	fclose(f);
	if (!ha_config_validate(&cfg, err, sizeof(err))) {
		fprintf(stderr, "invalid configuration: %s\n", err);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	agent = ha_agent_new(base, &cfg, &cb, NULL, err, sizeof(err));
	if (!agent) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	term = evsignal_new(base, SIGTERM, sig_cb, NULL);
	intr = evsignal_new(base, SIGINT, sig_cb, NULL);
	evsignal_add(term, NULL);
	evsignal_add(intr, NULL);
	if (!ha_agent_start(agent))
		return 1;
	event_base_dispatch(base);
	ha_agent_show_ha(agent, kv_show, NULL);
	printf("EXIT\n");
	fflush(stdout);
	ha_agent_free(agent);
	event_free(term);
	event_free(intr);
	event_base_free(base);
	ha_config_cleanup(&cfg);
	return 0;
}
