/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * One periodic timer (every 100 ms) walks the pools: client and server timeouts, pool upkeep,
 * statistics averages, deferred admin replies and shutdown progress. Walking every object ten
 * times a second costs microseconds per thousand connections, much less than a timer each.
 */
#include "pooler/janitor.h"
#include "pooler/admin.h"
#include "pooler/client.h"
#include "pooler/control.h"
#include "pooler/pool.h"
#include "pooler/server.h"

#include <stdlib.h>
#include <string.h>

#define JANITOR_INTERVAL_USEC 100000

static struct event *janitor_ev;
static usec_t last_stats_time;

static void check_waiting_clients(Pool *p, usec_t now)
{
	List *it, *tmp;

	list_for_each_safe(it, tmp, &p->waiting_clients) {
		Client *c = container_of(it, Client, head);

		if (cfg->query_wait_timeout <= 0 || !c->request_time ||
		    now - c->request_time < cfg->query_wait_timeout)
			continue;
		if (p->last_login_failed && p->last_login_error)
			disconnect_client(c, "08P01", "query_wait_timeout: %s", p->last_login_error);
		else
			disconnect_client(c, "08P01", "query_wait_timeout");
	}
}

static void check_active_clients(Pool *p, usec_t now)
{
	List *it, *tmp;

	list_for_each_safe(it, tmp, &p->active_clients) {
		Client *c = container_of(it, Client, head);
		Server *s = c->link;

		if (c->admin)
			continue;
		if (s && c->expected_z && cfg->query_timeout > 0 && c->query_start &&
		    now - c->query_start > cfg->query_timeout) {
			disconnect_client(c, "57014", "query_timeout");
			continue;
		}
		if (s && !c->expected_z && c->tx_state != 'I' && cfg->idle_transaction_timeout > 0 &&
		    now - s->request_time > cfg->idle_transaction_timeout) {
			disconnect_client(c, "25P03", "idle transaction timeout");
			continue;
		}
		if (!s && cfg->client_idle_timeout > 0 &&
		    now - (c->active_time ? c->active_time : c->connect_time) > cfg->client_idle_timeout)
			disconnect_client(c, "08P01", "client_idle_timeout");
	}
}

static void check_servers(Pool *p, usec_t now)
{
	List *it, *tmp;
	int min = pool_effective_min_size(p);
	int total;

	list_for_each_safe(it, tmp, &p->new_servers) {
		Server *s = container_of(it, Server, head);
		if (cfg->server_connect_timeout > 0 && now - s->connect_time > cfg->server_connect_timeout)
			disconnect_server(s, "server_connect_timeout");
	}
	list_for_each_safe(it, tmp, &p->used_servers) {
		Server *s = container_of(it, Server, head);
		server_start_reset(s);
	}
	list_for_each_safe(it, tmp, &p->idle_servers) {
		Server *s = container_of(it, Server, head);
		int count = p->n_idle_servers + p->n_active_servers + p->n_used_servers +
			    p->n_tested_servers;

		if (s->close_needed || p->db->db_dead || pool_is_paused(p)) {
			disconnect_server(s, pool_is_paused(p) ? "pool paused" : "database reconfigured");
			continue;
		}
		if (cfg->server_lifetime > 0 && now - s->connect_time > cfg->server_lifetime &&
		    count > min) {
			disconnect_server(s, "server lifetime over");
			continue;
		}
		if (cfg->server_idle_timeout > 0 && now - s->idle_since > cfg->server_idle_timeout &&
		    count > min)
			disconnect_server(s, "server idle timeout");
	}
	/* min_pool_size: keep warm servers once the pool is in use */
	total = p->n_idle_servers + p->n_active_servers + p->n_used_servers + p->n_tested_servers +
		p->n_new_servers;
	if (!pool_is_paused(p) && !p->db->admin && !p->db->db_dead && total < min &&
	    p->have_welcome && !pooler_shutting_down &&
	    (!p->last_connect_failed_time || now - p->last_connect_failed_time >= cfg->server_login_retry))
		server_launch(p);
}

static void stats_tick(usec_t now)
{
	List *it;
	double secs;

	if (!last_stats_time) {
		last_stats_time = now;
		return;
	}
	if (cfg->stats_period <= 0 || now - last_stats_time < cfg->stats_period)
		return;
	secs = (double)(now - last_stats_time) / USEC;
	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		PoolStats *cur = &p->stats, *old = &p->older_stats, *avg = &p->avg;
		uint64_t xacts = cur->xact_count - old->xact_count;
		uint64_t queries = cur->query_count - old->query_count;

		avg->xact_count = (uint64_t)((double)xacts / secs);
		avg->query_count = (uint64_t)((double)queries / secs);
		avg->server_assignment_count =
			(uint64_t)((double)(cur->server_assignment_count - old->server_assignment_count) / secs);
		avg->bytes_recv = (uint64_t)((double)(cur->bytes_recv - old->bytes_recv) / secs);
		avg->bytes_sent = (uint64_t)((double)(cur->bytes_sent - old->bytes_sent) / secs);
		avg->xact_time = xacts ? (cur->xact_time - old->xact_time) / xacts : 0;
		avg->query_time = queries ? (cur->query_time - old->query_time) / queries : 0;
		avg->wait_time = (uint64_t)((double)(cur->wait_time - old->wait_time) / secs);
		if (cfg->log_stats && !p->db->admin && (xacts || queries))
			log_info("stats: %s/%s %llu xacts/s, %llu queries/s, xact %llu us, query %llu us",
				 p->db->name, p->user->name, (unsigned long long)avg->xact_count,
				 (unsigned long long)avg->query_count, (unsigned long long)avg->xact_time,
				 (unsigned long long)avg->query_time);
		*old = *cur;
	}
	last_stats_time = now;
}

static void check_login_clients(usec_t now)
{
	List *it, *tmp;

	if (cfg->client_login_timeout <= 0)
		return;
	list_for_each_safe(it, tmp, &login_clients) {
		Client *c = container_of(it, Client, head);
		if (now - c->connect_time > cfg->client_login_timeout)
			disconnect_client(c, "08P01", "client_login_timeout");
	}
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	usec_t now = get_cached_time();
	List *it, *tmp;

	check_login_clients(now);
	list_for_each_safe(it, tmp, &all_pools) {
		Pool *p = container_of(it, Pool, head);

		check_waiting_clients(p, now);
		check_active_clients(p, now);
		check_servers(p, now);
		if (p->n_waiting_clients)
			pool_activate(p);
	}
	stats_tick(now);
	admin_janitor();
	main_check_shutdown();
}

bool janitor_start(void)
{
	struct timeval tv = { 0, JANITOR_INTERVAL_USEC };

	janitor_ev = event_new(pooler_base, -1, EV_PERSIST, janitor_cb, NULL);
	return janitor_ev && event_add(janitor_ev, &tv) == 0;
}

void janitor_stop(void)
{
	if (janitor_ev)
		event_free(janitor_ev);
	janitor_ev = NULL;
}
