/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Stateful libFuzzer target for the data path: the real sbuf, client, server, pool, prepared
 * statement, varcache and admin code, in-process on one libevent base, driven by arbitrary
 * client bytes. Clients are socketpairs handed to client_accept(); the pooler's servers connect
 * to a scripted fake PostgreSQL on a unix socket in this process, which logs them in
 * (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery) and answers every query,
 * extended-protocol message and COPY plausibly. The input is a program of steps (see run_input):
 * raw client chunks, canned protocol messages, event loop turns, reads, closes, new clients and
 * fake-server behaviours (errors, stalls, closes, unsolicited messages, garbage). Any crash or
 * sanitizer report is a bug; so is an iteration that leaves a client or server behind after
 * every peer closed (a leak of the state machines).
 */
#include "pooler/client.h"
#include "pooler/config.h"
#include "pooler/log.h"
#include "pooler/objects.h"
#include "pooler/pool.h"
#include "pooler/sbuf.h"
#include "pooler/varcache.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAKE_PORT 5999
#define MAX_CLIENTS 4
#define MAX_FAKE 16
#define FAKE_IN_CAP (256 * 1024)
#define FAKE_OUT_CAP (4 * 1024 * 1024)

static struct event_base *base;
static char tmpdir[64];

/* --- the input reader --- */

typedef struct Input {
	const uint8_t *p;
	size_t left;
} Input;

static uint8_t in_byte(Input *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

/* --- the fake PostgreSQL --- */

typedef enum FakeMode {
	FAKE_NORMAL, /* answer everything */
	FAKE_ERRORS, /* answer queries and Parse with an ErrorResponse */
	FAKE_STALL,  /* do not read (nor answer) */
} FakeMode;

typedef struct FakeConn {
	int fd;
	struct event *ev;
	bool started;      /* startup packet answered */
	bool failed;       /* extended protocol: skipping to Sync after an error */
	bool copy_in;      /* CopyInResponse sent, waiting for CopyDone / CopyFail */
	char tx;           /* transaction status for ReadyForQuery */
	uint8_t skip_type; /* a message too big for the buffer, being skipped */
	size_t skip_left;
	uint8_t in[FAKE_IN_CAP];
	size_t in_len;
	uint8_t *out;
	size_t out_len, out_pos;
} FakeConn;

static int fake_listen_fd = -1;
static struct event *fake_accept_ev;
static FakeConn *fakes[MAX_FAKE];
static FakeMode fake_mode;

static void fake_update_events(FakeConn *f);

static void fake_free(FakeConn *f)
{
	for (int i = 0; i < MAX_FAKE; i++)
		if (fakes[i] == f)
			fakes[i] = NULL;
	event_free(f->ev);
	close(f->fd);
	free(f->out);
	free(f);
}

static void fake_put(FakeConn *f, const void *data, size_t len)
{
	if (!len || f->out_len + len > FAKE_OUT_CAP)
		return; /* a peer that never reads: drop, as if the network lost it */
	if (!f->out) {
		f->out = malloc(FAKE_OUT_CAP);
		if (!f->out)
			abort();
	}
	memcpy(f->out + f->out_len, data, len);
	f->out_len += len;
}

static void fake_msg(FakeConn *f, uint8_t type, const void *body, size_t len)
{
	uint8_t hdr[5];
	uint32_t n = (uint32_t)len + 4;

	hdr[0] = type;
	hdr[1] = (uint8_t)(n >> 24);
	hdr[2] = (uint8_t)(n >> 16);
	hdr[3] = (uint8_t)(n >> 8);
	hdr[4] = (uint8_t)n;
	fake_put(f, hdr, 5);
	fake_put(f, body, len);
}

static void fake_str_msg(FakeConn *f, uint8_t type, const char *s)
{
	fake_msg(f, type, s, strlen(s) + 1);
}

static void fake_param(FakeConn *f, const char *k, const char *v)
{
	char buf[256];
	size_t kl = strlen(k) + 1, vl = strlen(v) + 1;

	memcpy(buf, k, kl);
	memcpy(buf + kl, v, vl);
	fake_msg(f, 'S', buf, kl + vl);
}

static void fake_ready(FakeConn *f)
{
	fake_msg(f, 'Z', &f->tx, 1);
}

static void fake_error(FakeConn *f, const char *sqlstate, const char *text)
{
	char buf[256];
	int n =
	    snprintf(buf, sizeof(buf), "SERROR%cVERROR%cC%s%cM%s%c", 0, 0, sqlstate, 0, text, 0);

	buf[n++] = 0;
	fake_msg(f, 'E', buf, (size_t)n);
	if (f->tx == 'T')
		f->tx = 'E';
}

/* RowDescription of one int4 column "?column?", DataRow of the value 1 */
static const uint8_t rowdesc[] = {0,  1, '?', 'c',  'o',  'l',  'u',  'm', 'n', '?',
				  0,  0, 0,   0,    0,    0,    0,    0,   0,   0,
				  23, 0, 4,   0xff, 0xff, 0xff, 0xff, 0,   0};
static const uint8_t datarow[] = {0, 1, 0, 0, 0, 1, '1'};

static void fake_row(FakeConn *f)
{
	fake_msg(f, 'T', rowdesc, sizeof(rowdesc));
	fake_msg(f, 'D', datarow, sizeof(datarow));
}

static bool starts(const char *q, size_t len, const char *word)
{
	size_t n = strlen(word);

	while (len && (*q == ' ' || *q == '\n' || *q == '\t')) {
		q++;
		len--;
	}
	return len >= n && strncasecmp(q, word, n) == 0;
}

static void fake_startup(FakeConn *f, const uint8_t *pkt, size_t len)
{
	static const uint8_t key[8] = {0, 0, 0x30, 0x39, 1, 2, 3, 4};
	static const uint8_t auth_ok[4] = {0, 0, 0, 0};
	uint32_t code = len >= 8 ? (uint32_t)pkt[4] << 24 | pkt[5] << 16 | pkt[6] << 8 | pkt[7] : 0;

	if (code == 80877103 || code == 80877104) {
		fake_put(f, "N", 1);
		return;
	}
	f->started = true;
	f->tx = 'I';
	if (code == 80877102) { /* CancelRequest: nothing to say */
		shutdown(f->fd, SHUT_RDWR);
		return;
	}
	fake_msg(f, 'R', auth_ok, sizeof(auth_ok));
	fake_param(f, "server_version", "15.4");
	fake_param(f, "server_encoding", "UTF8");
	fake_param(f, "client_encoding", "UTF8");
	fake_param(f, "DateStyle", "ISO, MDY");
	fake_param(f, "TimeZone", "UTC");
	fake_param(f, "IntervalStyle", "postgres");
	fake_param(f, "integer_datetimes", "on");
	fake_param(f, "standard_conforming_strings", "on");
	fake_param(f, "application_name", "");
	fake_msg(f, 'K', key, sizeof(key));
	fake_ready(f);
}

static void fake_query(FakeConn *f, const char *q, size_t len)
{
	if (fake_mode == FAKE_ERRORS) {
		fake_error(f, "42601", "syntax error");
	} else if (starts(q, len, "BEGIN") || starts(q, len, "START")) {
		f->tx = 'T';
		fake_str_msg(f, 'C', "BEGIN");
	} else if (starts(q, len, "COMMIT") || starts(q, len, "END") ||
		   starts(q, len, "ROLLBACK") || starts(q, len, "ABORT")) {
		f->tx = 'I';
		fake_str_msg(f, 'C', starts(q, len, "ROLLBACK") ? "ROLLBACK" : "COMMIT");
	} else if (starts(q, len, "SET")) {
		fake_str_msg(f, 'C', "SET");
		if (strstr(q, "TimeZone") || strstr(q, "timezone"))
			fake_param(f, "TimeZone", "Asia/Tokyo");
	} else if (starts(q, len, "DISCARD")) {
		fake_str_msg(f, 'C', "DISCARD ALL");
	} else if (starts(q, len, "DEALLOCATE")) {
		fake_str_msg(f, 'C', strstr(q, "ALL") ? "DEALLOCATE ALL" : "DEALLOCATE");
	} else if (starts(q, len, "PREPARE")) {
		fake_str_msg(f, 'C', "PREPARE");
	} else if (starts(q, len, "COPY") && strstr(q, "STDIN")) {
		static const uint8_t cin[] = {0, 0, 1, 0, 0};
		fake_msg(f, 'G', cin, sizeof(cin));
		f->copy_in = true;
		return; /* ReadyForQuery after CopyDone */
	} else if (starts(q, len, "COPY")) {
		static const uint8_t cout[] = {0, 0, 1, 0, 0};
		fake_msg(f, 'H', cout, sizeof(cout));
		fake_msg(f, 'd', "1\n", 2);
		fake_msg(f, 'c', NULL, 0);
		fake_str_msg(f, 'C', "COPY 1");
	} else if (starts(q, len, "NOTICE")) {
		static const char notice[] = "SNOTICE\0C00000\0Mhello\0";
		fake_msg(f, 'N', notice, sizeof(notice));
		fake_str_msg(f, 'C', "DO");
	} else {
		fake_row(f);
		fake_str_msg(f, 'C', "SELECT 1");
	}
	fake_ready(f);
}

/* One whole message from the pooler (body may be cut when it was skipped: len < declared). */
static void fake_message(FakeConn *f, uint8_t type, const uint8_t *body, size_t len)
{
	if (f->copy_in) {
		if (type == 'd')
			return;
		f->copy_in = false;
		if (type == 'c')
			fake_str_msg(f, 'C', "COPY 1");
		else
			fake_error(f, "57014", "COPY from stdin failed");
		fake_ready(f);
		return;
	}
	if (f->failed && type != 'S')
		return;
	switch (type) {
	case 'Q':
		fake_query(f, (const char *)body, len);
		break;
	case 'P':
		if (fake_mode == FAKE_ERRORS || (len && body[0] && memmem(body, len, "bad", 3))) {
			fake_error(f, "42601", "syntax error at or near \"bad\"");
			f->failed = true;
		} else {
			fake_msg(f, '1', NULL, 0);
		}
		break;
	case 'B':
		fake_msg(f, '2', NULL, 0);
		break;
	case 'D': {
		static const uint8_t nparams[] = {0, 0};
		if (len && body[0] == 'S')
			fake_msg(f, 't', nparams, sizeof(nparams));
		if (len > 1 && body[1] == 'n')
			fake_msg(f, 'n', NULL, 0);
		else
			fake_msg(f, 'T', rowdesc, sizeof(rowdesc));
		break;
	}
	case 'E':
		fake_msg(f, 'D', datarow, sizeof(datarow));
		fake_str_msg(f, 'C', "SELECT 1");
		break;
	case 'C':
		fake_msg(f, '3', NULL, 0);
		break;
	case 'S':
		f->failed = false;
		fake_ready(f);
		break;
	case 'H':
		break;
	case 'X':
		shutdown(f->fd, SHUT_RDWR);
		break;
	case 'd':
	case 'c':
	case 'f':
		break; /* COPY data outside COPY: PostgreSQL ignores it too */
	default:
		fake_error(f, "08P01", "invalid frontend message type");
		f->failed = true;
		break;
	}
}

/* Cut the buffered bytes into messages; return false when the connection was closed. */
static void fake_process(FakeConn *f)
{
	size_t pos = 0;

	while (pos < f->in_len) {
		const uint8_t *p = f->in + pos;
		size_t avail = f->in_len - pos;
		uint32_t n;

		if (f->skip_left) {
			size_t take = avail < f->skip_left ? avail : f->skip_left;
			pos += take;
			f->skip_left -= take;
			if (!f->skip_left)
				fake_message(f, f->skip_type, (const uint8_t *)"", 0);
			continue;
		}
		if (!f->started) {
			if (avail < 8)
				break;
			n = (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
			if (n < 8 || n > 10000) {
				f->in_len = 0;
				shutdown(f->fd, SHUT_RDWR);
				return;
			}
			if (avail < n)
				break;
			fake_startup(f, p, n);
			pos += n;
			continue;
		}
		if (avail < 5)
			break;
		n = (uint32_t)p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4];
		if (n < 4) {
			f->in_len = 0;
			shutdown(f->fd, SHUT_RDWR);
			return;
		}
		if ((size_t)n + 1 > FAKE_IN_CAP / 2) {
			f->skip_type = p[0];
			f->skip_left = (size_t)n + 1;
			continue;
		}
		if (avail < (size_t)n + 1)
			break;
		fake_message(f, p[0], p + 5, n - 4);
		pos += (size_t)n + 1;
	}
	memmove(f->in, f->in + pos, f->in_len - pos);
	f->in_len -= pos;
}

/* Send what is queued; false if the pooler's side is gone. */
static bool fake_flush(FakeConn *f)
{
	while (f->out_pos < f->out_len) {
		ssize_t n = send(f->fd, f->out + f->out_pos, f->out_len - f->out_pos,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return false;
		if (n <= 0)
			break;
		f->out_pos += (size_t)n;
	}
	if (f->out_pos == f->out_len)
		f->out_pos = f->out_len = 0;
	return true;
}

static void fake_cb(evutil_socket_t fd, short what, void *arg)
{
	FakeConn *f = arg;

	if (what & EV_READ) {
		ssize_t n = recv(fd, f->in + f->in_len, sizeof(f->in) - f->in_len, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			fake_free(f);
			return;
		}
		if (n > 0) {
			f->in_len += (size_t)n;
			fake_process(f);
		}
	}
	if (!fake_flush(f)) {
		fake_free(f);
		return;
	}
	fake_update_events(f);
}

static void fake_update_events(FakeConn *f)
{
	short want = 0;

	if (fake_mode != FAKE_STALL && f->in_len < sizeof(f->in))
		want |= EV_READ;
	if (f->out_pos < f->out_len)
		want |= EV_WRITE;
	event_del(f->ev);
	event_assign(f->ev, base, f->fd, want | EV_PERSIST, fake_cb, f);
	if (want)
		event_add(f->ev, NULL);
}

static void fake_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		FakeConn *f;
		int slot = -1;

		if (fd < 0)
			return;
		for (int i = 0; i < MAX_FAKE; i++)
			if (!fakes[i]) {
				slot = i;
				break;
			}
		f = slot >= 0 ? calloc(1, sizeof(*f)) : NULL;
		if (!f) {
			close(fd);
			continue;
		}
		f->fd = fd;
		f->ev = event_new(base, fd, EV_READ | EV_PERSIST, fake_cb, f);
		if (!f->ev)
			abort();
		fakes[slot] = f;
		fake_update_events(f);
	}
}

static void fake_set_mode(FakeMode m)
{
	fake_mode = m;
	for (int i = 0; i < MAX_FAKE; i++)
		if (fakes[i])
			fake_update_events(fakes[i]);
}

/* An unsolicited NoticeResponse and ParameterStatus on every server, as PostgreSQL may send. */
static void fake_unsolicited(void)
{
	static const char notice[] = "SWARNING\0C01000\0Mthe server says hello\0";

	for (int i = 0; i < MAX_FAKE; i++)
		if (fakes[i] && fakes[i]->started) {
			fake_msg(fakes[i], 'N', notice, sizeof(notice));
			fake_param(fakes[i], "TimeZone", "Europe/Paris");
			fake_flush(fakes[i]);
			fake_update_events(fakes[i]);
		}
}

/* Bytes from the input sent raw on the first server (a broken or hostile PostgreSQL). */
static void fake_garbage(Input *in)
{
	uint8_t buf[64];
	size_t n = in_byte(in) % sizeof(buf);

	for (size_t i = 0; i < n; i++)
		buf[i] = in_byte(in);
	for (int i = 0; i < MAX_FAKE; i++)
		if (fakes[i]) {
			fake_put(fakes[i], buf, n);
			fake_flush(fakes[i]);
			fake_update_events(fakes[i]);
			return;
		}
}

static void fake_close_all(void)
{
	for (int i = 0; i < MAX_FAKE; i++)
		if (fakes[i])
			fake_free(fakes[i]);
}

/* --- clients --- */

static int client_fds[MAX_CLIENTS];
static int n_client_fds;

static void new_client(void)
{
	int sv[2];
	PgAddr addr;

	if (n_client_fds >= MAX_CLIENTS)
		return;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	memset(&addr, 0, sizeof(addr));
	addr.family = AF_UNIX;
	client_fds[n_client_fds++] = sv[0];
	client_accept(sv[1], &addr);
}

static void loop_turns(int n)
{
	for (int i = 0; i < n; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Write all of data to a client socket, turning the loop while it is full (a few times). */
static void client_write(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;
	int tries = 0;

	if (fd < 0)
		return;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return;
		if (++tries > 8)
			return;
		loop_turns(2);
	}
}

static void client_drain(int fd)
{
	uint8_t buf[65536];

	if (fd < 0)
		return;
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		if (!log_quiet) /* DATAPATH_FUZZ_LOG: show the message types the client got */
			for (ssize_t i = 0; i + 5 <= n;) {
				uint32_t len = (uint32_t)buf[i + 1] << 24 | buf[i + 2] << 16 |
					       buf[i + 3] << 8 | buf[i + 4];
				fprintf(stderr, "client got '%c' (%u bytes)\n", buf[i], len);
				if (len < 4 || len > (size_t)(n - i))
					break;
				i += 1 + len;
			}
}

/* --- canned client messages, so that the fuzzer gets past the login quickly --- */

typedef struct Msg {
	uint8_t buf[4096];
	size_t len;
} Msg;

static void m_raw(Msg *m, const void *d, size_t n)
{
	if (m->len + n > sizeof(m->buf))
		n = sizeof(m->buf) - m->len;
	memcpy(m->buf + m->len, d, n);
	m->len += n;
}

static void m_u32(Msg *m, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	m_raw(m, b, 4);
}

static void m_u16(Msg *m, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	m_raw(m, b, 2);
}

static void m_str(Msg *m, const char *s)
{
	m_raw(m, s, strlen(s) + 1);
}

static size_t m_begin(Msg *m, uint8_t type)
{
	size_t at = m->len;

	if (type)
		m_raw(m, &type, 1);
	m_u32(m, 0);
	return at + (type ? 1 : 0);
}

static void m_end(Msg *m, size_t at)
{
	uint32_t n = (uint32_t)(m->len - at);

	m->buf[at] = (uint8_t)(n >> 24);
	m->buf[at + 1] = (uint8_t)(n >> 16);
	m->buf[at + 2] = (uint8_t)(n >> 8);
	m->buf[at + 3] = (uint8_t)n;
}

static const char *const databases[] = {"tx", "sess", "stmt", "pgpilot", "nosuch"};
static const char *const users[] = {"u", "pgadmin", "pgstats", "nobody"};
static const char *const queries[] = {
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "SET application_name = 'x'",
    "DISCARD ALL",
    "DEALLOCATE ALL",
    "DEALLOCATE \"PGPILOT_1\"",
    "PREPARE p AS SELECT 1",
    "COPY t FROM STDIN",
    "COPY t TO STDOUT",
    "NOTICE",
    "SHOW CONFIG",
    "SHOW POOLS",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW STATS",
    "SHOW LISTS",
    "SHOW MEM",
    "PAUSE",
    "RESUME",
    "RECONNECT",
    "KILL tx",
    "SET TimeZone = 'UTC'",
    "ROLLBACK",
    "SHOW DATABASES",
    "SHOW PREPARED_STATEMENTS",
    "SELECT bad",
};

static void canned(Msg *m, uint8_t kind, uint8_t arg)
{
	char name[16];
	size_t at;

	snprintf(name, sizeof(name), "s%u", arg % 12);
	switch (kind % 20) {
	case 0: /* startup */
		at = m_begin(m, 0);
		m_u32(m, 196608);
		m_str(m, "user");
		m_str(m, users[(arg >> 4) % 4]);
		m_str(m, "database");
		m_str(m, databases[(arg & 7) % 5]);
		if (arg & 0x08) {
			char v[1200];
			memset(v, 'a', sizeof(v) - 1);
			v[sizeof(v) - 1] = 0;
			m_str(m, "application_name");
			m_str(m, v);
			m_str(m, "TimeZone");
			m_str(m, "Asia/Tokyo");
		}
		m_raw(m, "", 1);
		m_end(m, at);
		break;
	case 1: /* Query */
		at = m_begin(m, 'Q');
		m_str(m, queries[arg % (sizeof(queries) / sizeof(queries[0]))]);
		m_end(m, at);
		break;
	case 2: /* named Parse */
	case 3: {
		char q[64];
		at = m_begin(m, 'P');
		m_str(m, kind % 20 == 2 ? name : "");
		snprintf(q, sizeof(q), "SELECT $1::int + %u", arg % 5);
		m_str(m, (arg & 0x80) ? "SELECT bad" : q);
		m_u16(m, 1);
		m_u32(m, 23);
		m_end(m, at);
		break;
	}
	case 4: /* Bind */
	case 5:
		at = m_begin(m, 'B');
		m_str(m, "");
		m_str(m, kind % 20 == 4 ? name : "");
		m_u16(m, 0);
		m_u16(m, 1);
		m_u32(m, 1);
		m_raw(m, "7", 1);
		m_u16(m, 0);
		m_end(m, at);
		break;
	case 6: /* Describe */
		at = m_begin(m, 'D');
		m_raw(m, (arg & 1) ? "P" : "S", 1);
		m_str(m, (arg & 1) ? "" : name);
		m_end(m, at);
		break;
	case 7: /* Execute */
		at = m_begin(m, 'E');
		m_str(m, "");
		m_u32(m, arg % 3);
		m_end(m, at);
		break;
	case 8:
		at = m_begin(m, 'S');
		m_end(m, at);
		break;
	case 9:
		at = m_begin(m, 'H');
		m_end(m, at);
		break;
	case 10: /* Close */
		at = m_begin(m, 'C');
		m_raw(m, (arg & 1) ? "P" : "S", 1);
		m_str(m, (arg & 1) ? "" : name);
		m_end(m, at);
		break;
	case 11:
		at = m_begin(m, 'X');
		m_end(m, at);
		break;
	case 12: /* SSLRequest / GSSENCRequest */
		m_u32(m, 8);
		m_u32(m, (arg & 1) ? 80877104 : 80877103);
		break;
	case 13: /* CopyData, CopyDone, CopyFail */
		at = m_begin(m, (arg % 3 == 0) ? 'd' : (arg % 3 == 1) ? 'c' : 'f');
		if (arg % 3 != 1)
			m_str(m, "1\tx");
		m_end(m, at);
		break;
	case 14: { /* a message that declares more than it sends (held or streamed) */
		static const uint8_t types[] = {'P', 'B', 'Q', 'd', 'D', 'C'};
		m_raw(m, &types[arg % 6], 1);
		m_u32(m, (uint32_t)(arg & 0xf0) << ((arg & 0x0c) + 4));
		m_str(m, name);
		break;
	}
	case 15: /* CancelRequest */
		m_u32(m, 16);
		m_u32(m, 80877102);
		m_u32(m, arg);
		m_u32(m, arg * 7919u);
		break;
	case 16: { /* a large named Parse (held whole) */
		size_t n = (size_t)(arg % 8 + 1) * 400;
		at = m_begin(m, 'P');
		m_str(m, name);
		m_raw(m, "SELECT 1 /* ", 12);
		for (size_t i = 0; i < n && m->len < sizeof(m->buf) - 16; i++)
			m_raw(m, "x", 1);
		m_raw(m, " */", 4);
		m_u16(m, 0);
		m_end(m, at);
		break;
	}
	case 17: /* a Bind with a large parameter */
		at = m_begin(m, 'B');
		m_str(m, "");
		m_str(m, name);
		m_u16(m, 0);
		m_u16(m, 1);
		m_u32(m, (uint32_t)(arg % 8 + 1) * 400);
		for (int i = 0; i < (arg % 8 + 1) * 400; i++)
			m_raw(m, "y", 1);
		m_u16(m, 0);
		m_end(m, at);
		break;
	case 18: /* Function call (refused) */
		at = m_begin(m, 'F');
		m_u32(m, arg);
		m_u16(m, 0);
		m_u16(m, 0);
		m_u16(m, 0);
		m_end(m, at);
		break;
	default: /* several SSLRequests at once, unread */
		for (int i = 0; i < (arg % 64) + 2; i++) {
			m_u32(m, 8);
			m_u32(m, 80877103);
		}
		break;
	}
}

/* --- one input --- */

static void reset_state(void)
{
	List *it, *tmp;

	for (int i = 0; i < n_client_fds; i++)
		if (client_fds[i] >= 0)
			close(client_fds[i]);
	n_client_fds = 0;
	fake_set_mode(FAKE_NORMAL);
	fake_close_all();
	loop_turns(8);
	/* whatever is still there (a server being connected, an idle one the loop has not noticed
	 * yet): close it the way KILL does */
	list_for_each_safe(it, tmp, &login_clients)
	{
		Client *c = container_of(it, Client, head);
		disconnect_client(c, NULL, "fuzz reset");
	}
	pools_kill(NULL);
	loop_turns(4);
	fake_close_all();
	loop_turns(4);
	if (n_clients_total || n_servers_total) {
		fprintf(stderr,
			"datapath_fuzz: %d clients, %d servers left after every peer closed\n",
			n_clients_total, n_servers_total);
		abort();
	}
}

/*
 * The input is a program. Each step starts with one byte; its low 3 bits say what it is:
 *   0  raw chunk: a length byte n, then n + 1 bytes written to the current client
 *   1  canned message: a kind byte and an argument byte (see canned())
 *   2  event loop: (next byte % 16) + 1 turns
 *   3  the current client reads and discards everything it was sent
 *   4  fake server: next byte % 6: 0 normal, 1 errors, 2 stall, 3 close every server,
 *      4 unsolicited Notice + ParameterStatus, 5 garbage bytes from the input
 *   5  the current client closes its socket
 *   6  a new client connects (up to MAX_CLIENTS) and becomes the current one
 *   7  the current client becomes next byte % the number of clients
 */
static void run_input(Input *in)
{
	int cur = 0;

	new_client();
	while (in->left) {
		uint8_t op = in_byte(in);
		int fd = cur < n_client_fds ? client_fds[cur] : -1;

		switch (op & 7) {
		case 0: {
			uint8_t buf[256];
			size_t n = (size_t)in_byte(in) + 1;
			if (n > in->left)
				n = in->left;
			memcpy(buf, in->p, n);
			in->p += n;
			in->left -= n;
			client_write(fd, buf, n);
			break;
		}
		case 1: {
			Msg m;
			uint8_t kind = in_byte(in), arg = in_byte(in);
			m.len = 0;
			canned(&m, kind, arg);
			client_write(fd, m.buf, m.len);
			break;
		}
		case 2:
			loop_turns(in_byte(in) % 16 + 1);
			break;
		case 3:
			client_drain(fd);
			break;
		case 4:
			switch (in_byte(in) % 6) {
			case 0:
				fake_set_mode(FAKE_NORMAL);
				break;
			case 1:
				fake_set_mode(FAKE_ERRORS);
				break;
			case 2:
				fake_set_mode(FAKE_STALL);
				break;
			case 3:
				fake_close_all();
				break;
			case 4:
				fake_unsolicited();
				break;
			default:
				fake_garbage(in);
				break;
			}
			break;
		case 5:
			if (fd >= 0) {
				close(fd);
				client_fds[cur] = -1;
			}
			break;
		case 6:
			new_client();
			cur = n_client_fds - 1;
			break;
		default:
			cur = n_client_fds ? in_byte(in) % n_client_fds : 0;
			break;
		}
		loop_turns(1);
	}
	loop_turns(16);
}

/* At exit: remove the temp dir (ini, auth_file, the fake server's socket). */
static void remove_tmpdir(void)
{
	static const char *const files[] = {"userlist.txt", "pgpilot.ini", ".s.PGSQL.5999"};
	char path[256];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
		unlink(path);
	}
	rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[256], ini[2048];
	struct sockaddr_un un;
	ConfigErrors errs;
	FILE *f;

	signal(SIGPIPE, SIG_IGN);
	log_quiet = getenv("DATAPATH_FUZZ_LOG") == NULL;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/datapath-fuzz-XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
	atexit(remove_tmpdir);
	snprintf(path, sizeof(path), "%s/userlist.txt", tmpdir);
	f = fopen(path, "w");
	if (!f)
		abort();
	fprintf(f, "\"u\" \"pw\"\n\"pgadmin\" \"pw\"\n\"pgstats\" \"pw\"\n");
	fclose(f);
	snprintf(ini, sizeof(ini),
		 "[pgpilot]\nlisten_addr = 127.0.0.1\nlisten_port = 1\nunix_socket_dir =\n"
		 "auth_type = trust\nauth_file = %s/userlist.txt\nadmin_users = pgadmin\n"
		 "stats_users = pgstats\npool_mode = transaction\ndefault_pool_size = 2\n"
		 "max_client_conn = 100\nmax_prepared_statements = 4\nserver_login_retry = 0\n"
		 "track_extra_parameters = IntervalStyle\n"
		 "[databases]\ntx = host=%s port=%d dbname=x\n"
		 "sess = host=%s port=%d dbname=x pool_mode=session\n"
		 "stmt = host=%s port=%d dbname=x pool_mode=statement pool_size=1\n",
		 tmpdir, tmpdir, FAKE_PORT, tmpdir, FAKE_PORT, tmpdir, FAKE_PORT);
	snprintf(path, sizeof(path), "%s/pgpilot.ini", tmpdir);
	f = fopen(path, "w");
	if (!f)
		abort();
	fputs(ini, f);
	fclose(f);
	memset(&errs, 0, sizeof(errs));
	cfg = config_load(path, &errs);
	config_errors_cleanup(&errs);
	if (!cfg) {
		fprintf(stderr, "datapath_fuzz: could not load %s\n", path);
		abort();
	}
	{
		char err[256];
		if (!varcache_set_tracked(cfg->track_extra_parameters, err, sizeof(err)))
			abort();
	}
	base = event_base_new();
	if (!base || event_base_priority_init(base, 3) < 0)
		abort();
	if (!pool_global_init(base) || !sbuf_global_init(base, cfg->pkt_buf))
		abort();
	pool_apply_config();

	fake_listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", tmpdir, FAKE_PORT);
	if (fake_listen_fd < 0 || bind(fake_listen_fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
	    listen(fake_listen_fd, 64) < 0)
		abort();
	fake_accept_ev =
	    event_new(base, fake_listen_fd, EV_READ | EV_PERSIST, fake_accept_cb, NULL);
	if (!fake_accept_ev || event_add(fake_accept_ev, NULL) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Input in = {data, size};

	run_input(&in);
	reset_state();
	return 0;
}
