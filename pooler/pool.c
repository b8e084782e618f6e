/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Databases, users and pools; state lists; linking clients to servers and releasing them; the one
 * exit for every connection. Objects are freed only after the current loop iteration's callbacks
 * (style.md rule 16): closed ones are parked on the justfree lists and a low-priority event frees
 * them.
 *
 * Interface: database_lookup, user_lookup_or_create, pool_lookup_or_create, pool_apply_config,
 * change_client_state, change_server_state, pool_assign_server, pool_release_server,
 * pool_activate, pool_server_ready, disconnect_client, disconnect_server, cancel_*.
 */
#include "pooler/pool.h"
#include "pooler/admin.h"
#include "pooler/client.h"
#include "pooler/server.h"
#include "pooler/slab.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct event_base *pooler_base;
DnsResolver *pooler_resolver;
Config *cfg;
List all_pools = LIST_INIT(all_pools);
List all_databases = LIST_INIT(all_databases);
List all_users = LIST_INIT(all_users);
List login_clients = LIST_INIT(login_clients);
static List justfree_clients = LIST_INIT(justfree_clients);
static List justfree_servers = LIST_INIT(justfree_servers);
int n_clients_total;
int n_servers_total;
bool pooler_paused;
bool pooler_shutting_down;

static Slab *client_slab, *server_slab;
static struct event *cleanup_ev;
static bool cleanup_scheduled;

#define CANCEL_BUCKETS 4096
static Client *cancel_tab[CANCEL_BUCKETS];

static const char *const client_state_names[] = { "free", "justfree", "login", "waiting_login",
						  "active", "waiting" };
static const char *const server_state_names[] = { "free", "justfree", "login", "idle",
						  "active", "used", "tested" };

const char *client_state_name(ClientState s)
{
	return (unsigned)s < ARRAY_SIZE(client_state_names) ? client_state_names[s] : "?";
}

const char *server_state_name(ServerState s)
{
	return (unsigned)s < ARRAY_SIZE(server_state_names) ? server_state_names[s] : "?";
}

usec_t get_cached_time(void)
{
	struct timeval tv;

	event_base_gettimeofday_cached(pooler_base, &tv);
	return (usec_t)tv.tv_sec * USEC + tv.tv_usec;
}

static void cleanup_cb(evutil_socket_t fd, short what, void *arg);

bool pool_global_init(struct event_base *base)
{
	pooler_base = base;
	client_slab = slab_new("client", sizeof(Client));
	server_slab = slab_new("server", sizeof(Server));
	cleanup_ev = event_new(base, -1, 0, cleanup_cb, NULL);
	if (!client_slab || !server_slab || !cleanup_ev)
		return false;
	/* the lowest priority: runs after every I/O callback of the iteration */
	event_priority_set(cleanup_ev, 1);
	return true;
}

Client *client_alloc(void)
{
	return slab_alloc(client_slab);
}

void client_free_raw(Client *c)
{
	slab_release(client_slab, c);
}

Server *server_alloc(void)
{
	return slab_alloc(server_slab);
}

void slab_release_server(Server *s)
{
	slab_release(server_slab, s);
}

const char *pgaddr_str(const PgAddr *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (a->family == AF_UNIX)
		snprintf(buf, len, "unix");
	else if (a->family == AF_INET || a->family == AF_INET6)
		snprintf(buf, len, "%s:%u",
			 inet_ntop(a->family, a->addr, ip, sizeof(ip)) ? ip : "?", a->port);
	else
		snprintf(buf, len, "?");
	return buf;
}

static void slog_v(LogLevel lvl, char kind, uint32_t id, const Pool *pool, const char *dbname,
		   const char *user, const PgAddr *addr, const char *fmt, va_list ap)
{
	char msg[1024], abuf[64];

	if ((int)lvl > log_verbosity)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (pool) {
		dbname = pool->db->name;
		user = pool->user->name;
	}
	log_msg(lvl, "%c-%u: %s/%s@%s %s", kind, id, dbname ? dbname : "(nodb)",
		user ? user : "(nouser)", pgaddr_str(addr, abuf, sizeof(abuf)), msg);
}

void slog_client(LogLevel lvl, const Client *c, const char *fmt, ...)
{
	va_list ap;
	const char *db = c->login ? c->login->database : NULL;
	const char *user = c->login ? c->login->user : NULL;

	va_start(ap, fmt);
	slog_v(lvl, 'C', c->cancel_id, c->pool, db, user, &c->addr, fmt, ap);
	va_end(ap);
}

void slog_server(LogLevel lvl, const Server *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	slog_v(lvl, 'S', s->id, s->pool, NULL, NULL, &s->addr, fmt, ap);
	va_end(ap);
}

/* --- databases and users --- */

static void database_cfg_free(DatabaseCfg *d)
{
	free(d->name);
	free(d->host);
	free(d->dbname);
	free(d->user);
	free(d->password);
	free(d->auth_user);
	free(d->connect_query);
	free(d->application_name);
	free(d->cluster);
	free(d->file);
	memset(d, 0, sizeof(*d));
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void database_cfg_copy(DatabaseCfg *dst, const DatabaseCfg *src)
{
	*dst = *src;
	dst->name = xstrdup(src->name);
	dst->host = xstrdup(src->host);
	dst->dbname = xstrdup(src->dbname);
	dst->user = xstrdup(src->user);
	dst->password = xstrdup(src->password);
	dst->auth_user = xstrdup(src->auth_user);
	dst->connect_query = xstrdup(src->connect_query);
	dst->application_name = xstrdup(src->application_name);
	dst->cluster = xstrdup(src->cluster);
	dst->file = xstrdup(src->file);
}

static Database *database_find(const char *name)
{
	List *it;

	list_for_each(it, &all_databases) {
		Database *db = container_of(it, Database, head);
		if (strcmp(db->name, name) == 0)
			return db;
	}
	return NULL;
}

static void user_set_secret(User *u, const char *secret)
{
	free(u->secret);
	u->secret = xstrdup(secret);
	u->kind = secret ? auth_secret_kind(secret) : SECRET_NONE;
	if (u->kind == SECRET_SCRAM && !scram_parse_secret(secret, &u->scram))
		u->kind = SECRET_NONE;
}

static User *user_new(const char *name)
{
	User *u = calloc(1, sizeof(*u));

	if (!u || !(u->name = strdup(name))) {
		free(u);
		return NULL;
	}
	u->pool_mode = POOL_INHERIT;
	u->max_user_connections = -1;
	list_init(&u->head);
	return u;
}

/* The forced login user of a database (user= in [databases]) lives with the database. */
static User *database_forced_user(Database *db)
{
	List *it;

	if (!db->cfg.user)
		return NULL;
	list_for_each(it, &all_users) {
		User *u = container_of(it, User, head);
		if (u->forced_for == db)
			return u;
	}
	return NULL;
}

static void database_refresh_forced_user(Database *db)
{
	User *u = database_forced_user(db);

	if (!db->cfg.user)
		return;
	if (!u || strcmp(u->name, db->cfg.user) != 0) {
		if (u)
			u->forced_for = NULL; /* stays until its pools are gone */
		u = user_new(db->cfg.user);
		if (!u)
			return;
		u->forced_for = db;
		list_append(&all_users, &u->head);
	}
	if (db->cfg.password) {
		user_set_secret(u, db->cfg.password);
	} else {
		const AuthUser *au = config_find_auth_user(cfg, u->name);
		user_set_secret(u, au ? au->secret : NULL);
	}
}

static Database *database_new(const char *name, const DatabaseCfg *dc, bool fallback)
{
	Database *db = calloc(1, sizeof(*db));

	if (!db || !(db->name = strdup(name))) {
		free(db);
		return NULL;
	}
	database_cfg_copy(&db->cfg, dc);
	db->from_fallback = fallback;
	list_append(&all_databases, &db->head);
	database_refresh_forced_user(db);
	return db;
}

static Database *admin_db_new(const char *name)
{
	Database *db = calloc(1, sizeof(*db));

	if (!db || !(db->name = strdup(name))) {
		free(db);
		return NULL;
	}
	db->admin = true;
	db->cfg.pool_size = 0;
	db->cfg.pool_mode = POOL_STATEMENT;
	list_append(&all_databases, &db->head);
	return db;
}

Database *database_peek(const char *name, bool *known)
{
	Database *db = database_find(name);

	if (db) {
		*known = !db->db_dead;
		return *known ? db : NULL;
	}
	/* config_find_database() answers the "*" entry for any other name */
	*known = config_find_database(cfg, name) != NULL;
	return NULL;
}

Database *database_lookup(const char *name)
{
	Database *db = database_find(name);
	const DatabaseCfg *dc;

	if (db)
		return db->db_dead ? NULL : db;
	dc = config_find_database(cfg, name);
	if (dc)
		return database_new(name, dc, false);
	dc = config_find_database(cfg, "*");
	if (dc) {
		DatabaseCfg tmp = *dc;
		Database *ndb;

		/* the fallback entry connects to the database of the requested name */
		tmp.dbname = dc->dbname ? dc->dbname : (char *)name;
		ndb = database_new(name, &tmp, true);
		return ndb;
	}
	return NULL;
}

User *user_lookup_or_create(const char *name)
{
	List *it;
	const AuthUser *au;
	User *u;

	list_for_each(it, &all_users) {
		u = container_of(it, User, head);
		if (!u->forced_for && strcmp(u->name, name) == 0)
			return u;
	}
	u = user_new(name);
	if (!u)
		return NULL;
	au = config_find_auth_user(cfg, name);
	user_set_secret(u, au ? au->secret : NULL);
	{
		const UserCfg *uc = config_find_user(cfg, name);
		if (uc) {
			u->pool_mode = uc->pool_mode;
			u->max_user_connections = uc->max_user_connections;
		}
	}
	list_append(&all_users, &u->head);
	return u;
}

User *database_login_user(Database *db, User *client_user)
{
	User *forced = database_forced_user(db);

	return forced ? forced : client_user;
}

Pool *pool_lookup_or_create(Database *db, User *user)
{
	List *it;
	Pool *p;

	list_for_each(it, &all_pools) {
		p = container_of(it, Pool, head);
		if (p->db == db && p->user == user)
			return p;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->db = db;
	p->user = user;
	list_init(&p->active_clients);
	list_init(&p->waiting_clients);
	list_init(&p->active_servers);
	list_init(&p->idle_servers);
	list_init(&p->used_servers);
	list_init(&p->tested_servers);
	list_init(&p->new_servers);
	list_append(&all_pools, &p->head);
	return p;
}

void pool_apply_config(void)
{
	List *it;

	if (!database_find("pgpilot"))
		admin_db_new("pgpilot");
	if (!database_find("pgbouncer"))
		admin_db_new("pgbouncer");
	list_for_each(it, &all_databases) {
		Database *db = container_of(it, Database, head);
		const DatabaseCfg *dc;
		bool changed;

		if (db->admin)
			continue;
		dc = config_find_database(cfg, db->from_fallback ? "*" : db->name);
		if (!dc) {
			db->db_dead = true;
			pools_reconnect(db);
			continue;
		}
		changed = !db->cfg.host != !dc->host || (dc->host && strcmp(db->cfg.host, dc->host)) ||
			  db->cfg.port != dc->port;
		database_cfg_free(&db->cfg);
		database_cfg_copy(&db->cfg, dc);
		if (db->from_fallback && !dc->dbname) {
			db->cfg.dbname = strdup(db->name);
		}
		db->db_dead = false;
		database_refresh_forced_user(db);
		/* a server that points at the old address must not be reused */
		if (changed)
			pools_reconnect(db);
	}
	list_for_each(it, &all_users) {
		User *u = container_of(it, User, head);
		const AuthUser *au;
		const UserCfg *uc;

		if (u->forced_for)
			continue;
		au = config_find_auth_user(cfg, u->name);
		user_set_secret(u, au ? au->secret : NULL);
		uc = config_find_user(cfg, u->name);
		u->pool_mode = uc ? uc->pool_mode : POOL_INHERIT;
		u->max_user_connections = uc ? uc->max_user_connections : -1;
	}
}

/* --- effective settings --- */

int pool_effective_mode(const Pool *pool)
{
	if (pool->db->admin)
		return POOL_STATEMENT;
	if (pool->user->pool_mode != POOL_INHERIT)
		return pool->user->pool_mode;
	if (pool->db->cfg.pool_mode != POOL_INHERIT)
		return pool->db->cfg.pool_mode;
	return cfg->pool_mode;
}

int pool_effective_size(const Pool *pool)
{
	if (pool->db->admin)
		return 0;
	return pool->db->cfg.pool_size >= 0 ? pool->db->cfg.pool_size : cfg->default_pool_size;
}

int pool_effective_min_size(const Pool *pool)
{
	return pool->db->cfg.min_pool_size >= 0 ? pool->db->cfg.min_pool_size : cfg->min_pool_size;
}

int pool_effective_reserve(const Pool *pool)
{
	return pool->db->cfg.reserve_pool >= 0 ? pool->db->cfg.reserve_pool : cfg->reserve_pool_size;
}

static int pool_server_count(const Pool *p)
{
	return p->n_active_servers + p->n_idle_servers + p->n_used_servers + p->n_tested_servers +
	       p->n_new_servers;
}

/* --- state lists --- */

static void client_list_remove(Client *c)
{
	Pool *p = c->pool;

	switch (c->state) {
	case CL_LOGIN:
		list_del(&c->head);
		break;
	case CL_ACTIVE:
		list_del(&c->head);
		p->n_active_clients--;
		break;
	case CL_WAITING:
	case CL_WAITING_LOGIN:
		list_del(&c->head);
		p->n_waiting_clients--;
		break;
	case CL_JUSTFREE:
		list_del(&c->head);
		break;
	default:
		break;
	}
}

void change_client_state(Client *c, ClientState st)
{
	Pool *p = c->pool;

	client_list_remove(c);
	c->state = st;
	switch (st) {
	case CL_LOGIN:
		list_append(&login_clients, &c->head);
		break;
	case CL_ACTIVE:
		list_append(&p->active_clients, &c->head);
		p->n_active_clients++;
		break;
	case CL_WAITING:
	case CL_WAITING_LOGIN:
		list_append(&p->waiting_clients, &c->head);
		p->n_waiting_clients++;
		break;
	case CL_JUSTFREE:
		list_append(&justfree_clients, &c->head);
		break;
	default:
		break;
	}
}

static int *server_counter(Pool *p, ServerState st)
{
	switch (st) {
	case SV_LOGIN:
		return &p->n_new_servers;
	case SV_IDLE:
		return &p->n_idle_servers;
	case SV_ACTIVE:
		return &p->n_active_servers;
	case SV_USED:
		return &p->n_used_servers;
	case SV_TESTED:
		return &p->n_tested_servers;
	default:
		return NULL;
	}
}

static List *server_list(Pool *p, ServerState st)
{
	switch (st) {
	case SV_LOGIN:
		return &p->new_servers;
	case SV_IDLE:
		return &p->idle_servers;
	case SV_ACTIVE:
		return &p->active_servers;
	case SV_USED:
		return &p->used_servers;
	case SV_TESTED:
		return &p->tested_servers;
	case SV_JUSTFREE:
		return &justfree_servers;
	default:
		return NULL;
	}
}

void change_server_state(Server *s, ServerState st)
{
	Pool *p = s->pool;
	int *cnt;
	List *l;

	if (s->state != SV_FREE) {
		list_del(&s->head);
		cnt = server_counter(p, s->state);
		if (cnt)
			(*cnt)--;
	}
	s->state = st;
	l = server_list(p, st);
	if (l) {
		/* idle servers are used last-in first-out: the warmest connection goes first */
		if (st == SV_IDLE)
			list_prepend(l, &s->head);
		else
			list_append(l, &s->head);
	}
	cnt = server_counter(p, st);
	if (cnt)
		(*cnt)++;
}

/* --- linking --- */

bool pool_is_paused(const Pool *pool)
{
	return pooler_paused || pool->db->paused;
}

/* Link c and s, bring the server's parameters in line with the client's. */
static void pool_link(Client *c, Server *s)
{
	Pool *p = c->pool;
	usec_t now = get_cached_time();

	change_server_state(s, SV_ACTIVE);
	s->link = c;
	c->link = s;
	if (c->state != CL_ACTIVE)
		change_client_state(c, CL_ACTIVE);
	sbuf_link(&c->sbuf, &s->sbuf);
	s->sbuf.bytes_in = &p->stats.bytes_sent; /* what the server says goes to the client */
	p->stats.server_assignment_count++;
	if (c->request_time)
		p->stats.wait_time += (uint64_t)(now - c->request_time);
	c->request_time = 0;
	s->request_time = now;
	server_sync_params(s, c);
}

bool pool_assign_server(Client *c)
{
	Pool *p = c->pool;
	List *first;

	if (c->link)
		return true;
	if (c->state == CL_WAITING)
		return false;
	if (!pool_is_paused(p) && list_empty(&p->waiting_clients) &&
	    (first = list_first(&p->idle_servers)) != NULL) {
		Server *s = container_of(first, Server, head);
		if (!server_needs_check(s)) {
			pool_link(c, s);
			if (c->link)
				return true;
			if (c->state == CL_JUSTFREE)
				return false;
			/* the server died while being linked (its SET could not be sent): the client
			 * lost nothing yet and waits for another one like any other */
		}
	}
	c->request_time = get_cached_time();
	change_client_state(c, CL_WAITING);
	pool_activate(p);
	return c->link != NULL;
}

void pool_release_server(Server *s)
{
	Pool *p = s->pool;
	Client *c = s->link;
	int mode = pool_effective_mode(p);

	if (c) {
		c->link = NULL;
		sbuf_unlink(&s->sbuf);
	}
	s->link = NULL;
	s->sbuf.bytes_in = NULL;
	s->idle_since = get_cached_time();
	if (s->close_needed || p->db->db_dead) {
		disconnect_server(s, "server released after RECONNECT, RELOAD or a change that makes it "
				  "unfit for reuse");
		return;
	}
	if (cfg->server_lifetime > 0 && s->idle_since - s->connect_time > cfg->server_lifetime) {
		disconnect_server(s, "server lifetime over");
		return;
	}
	if (mode == POOL_SESSION || cfg->server_reset_query_always) {
		if (cfg->server_reset_query && cfg->server_reset_query[0]) {
			change_server_state(s, SV_USED);
			server_start_reset(s);
			return;
		}
	}
	pool_server_ready(s);
}

void pool_server_ready(Server *s)
{
	Pool *p = s->pool;
	List *first;

	/* direct hand-over: the first waiting client gets this server without a trip to the list */
	if (!pool_is_paused(p) && (first = list_first(&p->waiting_clients)) != NULL) {
		Client *c = container_of(first, Client, head);
		if (c->state == CL_WAITING) {
			change_server_state(s, SV_IDLE);
			pool_link(c, s);
			sbuf_continue(&c->sbuf);
			pool_activate(p);
			return;
		}
	}
	change_server_state(s, SV_IDLE);
	pool_activate(p);
}

typedef enum LaunchCheck {
	LAUNCH_OK,	   /* open one more */
	LAUNCH_FULL,	   /* pool_size (and reserve) reached, or nothing to do */
	LAUNCH_DB_LIMIT,   /* max_db_connections reached */
	LAUNCH_USER_LIMIT, /* max_user_connections reached */
} LaunchCheck;

/* May the pool open one more server connection now? */
static LaunchCheck pool_may_launch(Pool *p)
{
	int size = pool_effective_size(p);
	int total = pool_server_count(p);
	int maxdb = p->db->cfg.max_db_connections >= 0 ? p->db->cfg.max_db_connections
						       : cfg->max_db_connections;
	int maxuser = p->user->max_user_connections >= 0 ? p->user->max_user_connections
							 : cfg->max_user_connections;
	usec_t now = get_cached_time();

	if (p->db->admin)
		return LAUNCH_FULL;
	/* after a failed login, wait server_login_retry before the next attempt; a cluster member
	 * is tried again sooner, since the view may have moved on (at most every second) */
	if (p->last_connect_failed_time &&
	    now - p->last_connect_failed_time <
		    (p->db->cfg.cluster && cfg->server_login_retry > USEC ? USEC : cfg->server_login_retry))
		return LAUNCH_FULL;
	if (total >= size) {
		/* the reserve pool opens when the first waiting client waited reserve_pool_timeout */
		Client *c;

		if (total >= size + pool_effective_reserve(p) || list_empty(&p->waiting_clients))
			return LAUNCH_FULL;
		c = container_of(list_first(&p->waiting_clients), Client, head);
		if (!c->request_time || now - c->request_time < cfg->reserve_pool_timeout)
			return LAUNCH_FULL;
	}
	if (maxdb > 0 && p->db->server_count >= maxdb)
		return LAUNCH_DB_LIMIT;
	if (maxuser > 0 && p->user->server_count >= maxuser)
		return LAUNCH_USER_LIMIT;
	return LAUNCH_OK;
}

/*
 * A database or user limit blocks <p> while another pool of the same database or user keeps an
 * idle server: close that one so the slot can move to where clients wait. True when one went.
 */
static bool pool_evict_idle_for(Pool *p, LaunchCheck why)
{
	List *it;

	list_for_each(it, &all_pools) {
		Pool *q = container_of(it, Pool, head);
		List *first;

		if (q == p || (why == LAUNCH_DB_LIMIT ? q->db != p->db : q->user != p->user))
			continue;
		first = list_first(&q->idle_servers);
		if (!first)
			continue;
		disconnect_server(container_of(first, Server, head),
				  "idle; its slot is needed by another pool (%s)",
				  why == LAUNCH_DB_LIMIT ? "max_db_connections" : "max_user_connections");
		return true;
	}
	return false;
}

void pool_activate(Pool *p)
{
	List *first;
	int wanted;

	if (p->db->admin)
		return;
	while ((first = list_first(&p->waiting_clients)) != NULL) {
		Client *c = container_of(first, Client, head);
		Server *s;

		if (c->state == CL_WAITING_LOGIN) {
			if (!p->have_welcome)
				break;
			client_finish_login(c);
			continue;
		}
		if (pool_is_paused(p))
			break;
		first = list_first(&p->idle_servers);
		if (!first)
			break;
		s = container_of(first, Server, head);
		if (server_needs_check(s)) {
			server_start_check(s);
			continue;
		}
		pool_link(c, s);
		sbuf_continue(&c->sbuf);
	}
	/* enough servers on the way for the clients still waiting? */
	wanted = p->n_waiting_clients - p->n_new_servers - p->n_tested_servers;
	if (!p->have_welcome && p->n_waiting_clients > 0 && p->n_new_servers == 0)
		wanted = wanted > 0 ? wanted : 1;
	while (wanted-- > 0) {
		LaunchCheck lc = pool_may_launch(p);

		if (lc == LAUNCH_DB_LIMIT || lc == LAUNCH_USER_LIMIT) {
			if (!pool_evict_idle_for(p, lc))
				break;
			lc = pool_may_launch(p);
		}
		if (lc != LAUNCH_OK)
			break;
		server_launch(p);
		if (p->no_route || p->resolving)
			break;
	}
}

/* --- the one exit --- */

static void client_free(Client *c)
{
	varcache_clear(&c->vars);
	if (c->login) {
		scram_server_cleanup(&c->login->scram);
		free(c->login->database);
		free(c->login->user);
		free(c->login->password);
		free(c->login);
	}
	slab_release(client_slab, c);
}

static void server_free(Server *s)
{
	varcache_clear(&s->vars);
	if (s->scram) {
		scram_client_cleanup(s->scram);
		free(s->scram);
	}
	free(s->fatal_msg);
	if (s->login_params) {
		pktbuf_cleanup(s->login_params);
		free(s->login_params);
	}
	slab_release(server_slab, s);
}

static void cleanup_cb(evutil_socket_t fd, short what, void *arg)
{
	List *it, *tmp;

	cleanup_scheduled = false;
	list_for_each_safe(it, tmp, &justfree_clients) {
		Client *c = container_of(it, Client, head);
		list_del(&c->head);
		client_free(c);
	}
	list_for_each_safe(it, tmp, &justfree_servers) {
		Server *s = container_of(it, Server, head);
		list_del(&s->head);
		server_free(s);
	}
}

void pool_schedule_cleanup(void)
{
	if (cleanup_scheduled)
		return;
	cleanup_scheduled = true;
	event_active(cleanup_ev, 0, 0);
}

/* Is the server between requests, with nothing half-done that the next client could inherit? */
static bool server_is_clean(const Server *s, const Client *c)
{
	if (s->tx_state != 'I' || s->skip_z)
		return false;
	if (c && (c->expected_z || c->ext_open))
		return false;
	if (s->sbuf.pkt_remain || sbuf_has_input(&s->sbuf))
		return false;
	if (c && (c->sbuf.pkt_remain || (c->sbuf.buf && c->sbuf.buf->done < c->sbuf.buf->scan)))
		return false;
	return true;
}

void disconnect_client(Client *c, const char *sqlstate, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	Server *s = c->link;

	if (c->state == CL_JUSTFREE || c->state == CL_FREE)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (c->cancel_only)
		; /* a cancel connection ends silently */
	else if (cfg->log_disconnections || (sqlstate && cfg->log_pooler_errors))
		slog_client(LOG_LVL_INFO, c, "closing because: %s (age=%llds)", reason,
			    (long long)((get_cached_time() - c->connect_time) / USEC));
	if (sqlstate) {
		PktBuf pb;
		uint8_t tmp[640];

		pktbuf_init_fixed(&pb, tmp, sizeof(tmp));
		pktbuf_write_error(&pb, "FATAL", sqlstate, reason);
		if (!pb.failed)
			sbuf_send(&c->sbuf, pb.buf, pb.len);
	}
	if (s) {
		/* a clean server goes back (session mode resets it there); a dirty one is closed */
		bool clean = server_is_clean(s, c);

		c->link = NULL;
		s->link = NULL;
		sbuf_unlink(&c->sbuf);
		if (clean)
			pool_release_server(s);
		else
			disconnect_server(s, "client disconnected mid-transaction");
	}
	cancel_unregister(c);
	if (c->admin)
		admin_client_gone(c);
	if (c->user && c->state != CL_LOGIN)
		c->user->client_count--;
	sbuf_close(&c->sbuf);
	n_clients_total--;
	change_client_state(c, CL_JUSTFREE);
	pool_schedule_cleanup();
	if (c->pool)
		pool_activate(c->pool);
}

void disconnect_server(Server *s, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	Pool *p = s->pool;
	Client *c = s->link;

	if (s->state == SV_JUSTFREE || s->state == SV_FREE)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (cfg->log_disconnections)
		slog_server(LOG_LVL_INFO, s, "closing because: %s (age=%llds)", reason,
			    (long long)((get_cached_time() - s->connect_time) / USEC));
	if (c) {
		c->link = NULL;
		s->link = NULL;
		client_server_lost(c, s, reason);
	}
	sbuf_close(&s->sbuf);
	p->db->server_count--;
	p->user->server_count--;
	n_servers_total--;
	change_server_state(s, SV_JUSTFREE);
	pool_schedule_cleanup();
	pool_activate(p);
}

/* The first server of a cluster= pool that <match> picks, on any list; <count> gets their number
 * when not NULL. */
static Server *first_cluster_server(PoolServerMatch match, const void *arg, int *count)
{
	Server *found = NULL;
	List *it, *sit;

	if (count)
		*count = 0;
	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		List *lists[] = { &p->active_servers, &p->idle_servers, &p->used_servers,
				  &p->tested_servers, &p->new_servers };

		if (!p->db->cfg.cluster)
			continue;
		for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
			list_for_each(sit, lists[i]) {
				Server *s = container_of(sit, Server, head);

				if (!match(p, s, arg))
					continue;
				if (!count)
					return s;
				found = found ? found : s;
				(*count)++;
			}
	}
	return found;
}

int pool_close_cluster_servers(PoolServerMatch match, const void *arg, const char *sqlstate,
			       const char *reason)
{
	Server *s;
	int n = 0, total;

	/*
	 * One at a time, searching again after each: closing a server wakes its client and the
	 * pool, which may move other servers between lists (a list walk could then run off its
	 * list). At most the servers there were at the start, so that one opened meanwhile to
	 * the same member cannot keep this going.
	 */
	s = first_cluster_server(match, arg, &total);
	while (s && n < total) {
		s->lost_sqlstate = sqlstate;
		disconnect_server(s, "%s", reason);
		n++;
		s = first_cluster_server(match, arg, NULL);
	}
	return n;
}

static bool server_is_of_member(const Pool *p, const Server *s, const void *member)
{
	return strcmp(s->member, (const char *)member) == 0;
}

int pool_close_servers_of_member(const char *member, const char *sqlstate, const char *fmt, ...)
{
	char reason[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	return pool_close_cluster_servers(server_is_of_member, member, sqlstate, reason);
}

/* --- pause, reconnect, kill --- */

bool pools_quiet(const Database *db)
{
	List *it;

	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		if (db && p->db != db)
			continue;
		if (p->n_active_servers || p->n_tested_servers)
			return false;
	}
	return true;
}

void pools_reconnect(Database *db)
{
	List *it, *sit, *tmp;

	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		if (db && p->db != db)
			continue;
		list_for_each_safe(sit, tmp, &p->idle_servers) {
			Server *s = container_of(sit, Server, head);
			disconnect_server(s, "RECONNECT");
		}
		list_for_each(sit, &p->active_servers)
			container_of(sit, Server, head)->close_needed = true;
		list_for_each(sit, &p->used_servers)
			container_of(sit, Server, head)->close_needed = true;
		list_for_each(sit, &p->tested_servers)
			container_of(sit, Server, head)->close_needed = true;
		list_for_each(sit, &p->new_servers)
			container_of(sit, Server, head)->close_needed = true;
	}
}

bool pools_wait_close_done(const Database *db)
{
	List *it, *sit;

	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		if (db && p->db != db)
			continue;
		list_for_each(sit, &p->active_servers)
			if (container_of(sit, Server, head)->close_needed)
				return false;
		list_for_each(sit, &p->used_servers)
			if (container_of(sit, Server, head)->close_needed)
				return false;
		list_for_each(sit, &p->tested_servers)
			if (container_of(sit, Server, head)->close_needed)
				return false;
	}
	return true;
}

static void pool_kill_lists(Pool *p)
{
	List *lists[] = { &p->active_clients, &p->waiting_clients };
	List *slists[] = { &p->active_servers, &p->idle_servers, &p->used_servers,
			   &p->tested_servers, &p->new_servers };
	List *it, *tmp;

	for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
		list_for_each_safe(it, tmp, lists[i])
			disconnect_client(container_of(it, Client, head), "57P01",
					  "database removed by KILL");
	for (size_t i = 0; i < ARRAY_SIZE(slists); i++)
		list_for_each_safe(it, tmp, slists[i])
			disconnect_server(container_of(it, Server, head), "KILL");
}

void pools_kill(Database *db)
{
	List *it;

	list_for_each(it, &all_pools) {
		Pool *p = container_of(it, Pool, head);
		if (!db || p->db == db)
			pool_kill_lists(p);
	}
}

/* --- cancel keys --- */

void cancel_register(Client *c)
{
	static uint32_t next_id = 1;
	Client **b;

	c->cancel_id = next_id++;
	if (next_id == 0)
		next_id = 1;
	b = &cancel_tab[c->cancel_id % CANCEL_BUCKETS];
	c->cancel_next = *b;
	*b = c;
}

void cancel_unregister(Client *c)
{
	Client **pp;

	if (!c->cancel_id)
		return;
	for (pp = &cancel_tab[c->cancel_id % CANCEL_BUCKETS]; *pp; pp = &(*pp)->cancel_next) {
		if (*pp == c) {
			*pp = c->cancel_next;
			break;
		}
	}
	c->cancel_next = NULL;
}

Client *cancel_lookup(uint32_t id, uint32_t key)
{
	for (Client *c = cancel_tab[id % CANCEL_BUCKETS]; c; c = c->cancel_next)
		if (c->cancel_id == id && c->cancel_key == key)
			return c;
	return NULL;
}

void pool_global_cleanup(void)
{
	if (cleanup_ev) {
		cleanup_cb(-1, 0, NULL);
		event_free(cleanup_ev);
		cleanup_ev = NULL;
	}
}
