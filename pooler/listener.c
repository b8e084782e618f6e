/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Listening sockets and accepting clients. listen_addr is a comma list of addresses, "*" for all
 * IPv4 and IPv6 addresses; the Unix socket is unix_socket_dir/.s.PGSQL.<port> like PostgreSQL's.
 */
#include "pooler/listener.h"
#include "pooler/client.h"
#include "pooler/pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LISTENERS 16

typedef struct Listener {
	struct event *ev;
	int fd;
	int family;
} Listener;

static Listener listeners[MAX_LISTENERS];
static int n_listeners;
static char unix_path[108];

/*
 * When the process runs out of descriptors (or the kernel of memory), accept() fails at once
 * every time the loop polls a listener that still has connections queued: without a pause the
 * loop spins and logs at full speed. So every listener rests for ACCEPT_BACKOFF_SEC, the
 * failure is logged once per pause with a count, and the queued connections wait in the
 * kernel's backlog meanwhile (as PgBouncer does).
 */
#define ACCEPT_BACKOFF_SEC 1
static struct event *accept_backoff_ev;
static bool accept_resting;
static unsigned long accept_failures;

static void listeners_rest(void);

static bool accept_error_is_resource(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
	Listener *l = arg;

	/* take a bounded batch per wake-up so one busy listener cannot starve the loop */
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		PgAddr pa;
		int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			if (accept_error_is_resource(errno)) {
				accept_failures++;
				if (!accept_resting)
					log_msg_errno(LOG_LVL_WARNING,
						      "accept failed; not accepting connections for %d s",
						      ACCEPT_BACKOFF_SEC);
				listeners_rest();
				return;
			}
			log_msg_errno(LOG_LVL_WARNING, "accept failed");
			return;
		}
		memset(&pa, 0, sizeof(pa));
		pa.family = (uint8_t)l->family;
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			memcpy(pa.addr, &in->sin_addr, 4);
			pa.port = ntohs(in->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			memcpy(pa.addr, &in6->sin6_addr, 16);
			pa.port = ntohs(in6->sin6_port);
		}
		if (ss.ss_family != AF_UNIX) {
			int on = 1;
			setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
			if (cfg->tcp_keepalive)
				setsockopt(cfd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
		}
		client_accept(cfd, &pa);
	}
}

static void accept_backoff_cb(evutil_socket_t fd, short what, void *arg)
{
	accept_resting = false;
	if (accept_failures > 1)
		log_info("accepting connections again (%lu accept failures while resting)",
			 accept_failures);
	accept_failures = 0;
	for (int i = 0; i < n_listeners; i++)
		if (event_add(listeners[i].ev, NULL) < 0)
			log_error("could not watch a listening socket again");
}

/* Stop watching every listener for ACCEPT_BACKOFF_SEC (see accept_error_is_resource). */
static void listeners_rest(void)
{
	struct timeval tv = { ACCEPT_BACKOFF_SEC, 0 };

	if (accept_resting)
		return;
	if (!accept_backoff_ev)
		accept_backoff_ev = evtimer_new(pooler_base, accept_backoff_cb, NULL);
	if (!accept_backoff_ev || evtimer_add(accept_backoff_ev, &tv) < 0) {
		log_error("could not arm the accept back-off timer");
		return;
	}
	accept_resting = true;
	for (int i = 0; i < n_listeners; i++)
		event_del(listeners[i].ev);
}

static bool listener_add(int fd, int family)
{
	Listener *l;

	if (n_listeners == MAX_LISTENERS) {
		close(fd);
		log_error("too many listen addresses");
		return false;
	}
	l = &listeners[n_listeners];
	l->fd = fd;
	l->family = family;
	l->ev = event_new(pooler_base, fd, EV_READ | EV_PERSIST, accept_cb, l);
	if (!l->ev || event_add(l->ev, NULL) < 0) {
		close(fd);
		return false;
	}
	n_listeners++;
	return true;
}

static bool listen_tcp(const char *host)
{
	struct addrinfo hints, *res = NULL, *ai;
	char port[16];
	int rc, opened = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", cfg->listen_port);
	rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
	if (rc != 0) {
		log_error("could not resolve listen address \"%s\": %s", host, gai_strerror(rc));
		return false;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int on = 1;
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		char ip[INET6_ADDRSTRLEN] = "?";

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
		getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, cfg->listen_backlog) < 0) {
			log_msg_errno(LOG_LVL_ERROR, "could not listen on %s:%d", ip, cfg->listen_port);
			close(fd);
			continue;
		}
		if (listener_add(fd, ai->ai_family)) {
			log_info("listening on %s:%d", ip, cfg->listen_port);
			opened++;
		}
	}
	freeaddrinfo(res);
	return opened > 0;
}

static bool listen_unix(void)
{
	struct sockaddr_un un;
	int fd, rc;

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	rc = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", cfg->unix_socket_dir,
		      cfg->listen_port);
	if (rc < 0 || (size_t)rc >= sizeof(un.sun_path)) {
		log_error("unix_socket_dir is too long");
		return false;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* a stale socket file from a crashed run would block bind */
	unlink(un.sun_path);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, cfg->listen_backlog) < 0) {
		log_msg_errno(LOG_LVL_ERROR, "could not listen on unix socket %s", un.sun_path);
		close(fd);
		return false;
	}
	chmod(un.sun_path, (mode_t)cfg->unix_socket_mode);
	snprintf(unix_path, sizeof(unix_path), "%s", un.sun_path);
	if (!listener_add(fd, AF_UNIX))
		return false;
	log_info("listening on unix socket %s", un.sun_path);
	return true;
}

bool listener_start(void)
{
	bool ok = true;

	if (cfg->listen_addr && cfg->listen_addr[0]) {
		char *copy = strdup(cfg->listen_addr), *tok, *save;

		for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
			ok &= listen_tcp(tok);
		free(copy);
	}
	if (cfg->unix_socket_dir && cfg->unix_socket_dir[0])
		ok &= listen_unix();
	if (n_listeners == 0) {
		log_error("no listening sockets: set listen_addr or unix_socket_dir");
		return false;
	}
	return ok;
}

void listener_stop(void)
{
	if (accept_backoff_ev) {
		event_free(accept_backoff_ev);
		accept_backoff_ev = NULL;
	}
	accept_resting = false;
	for (int i = 0; i < n_listeners; i++) {
		event_free(listeners[i].ev);
		close(listeners[i].fd);
	}
	n_listeners = 0;
	if (unix_path[0])
		unlink(unix_path);
	unix_path[0] = 0;
}
