/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * The data path: read, cut into messages, forward without copying, apply backpressure. See
 * sbuf.h for the model. Invariants: [done, scan) of a receive buffer only ever holds bytes that
 * go to sb->dst; a socket whose forwarded bytes could not all be written has flush_blocked set
 * and is registered as dst->blocked_src, and it does not read until dst drains.
 */
#include "pooler/sbuf.h"
#include "pooler/slab.h"
#include "protocol/packet.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char SBUF_REASON_BAD_LENGTH[] = "invalid packet length";
const char SBUF_REASON_TOO_LARGE[] = "message too large to hold";

static struct event_base *sb_base;
static Slab *iobuf_slab;
static uint32_t iobuf_size;
static int iobufs_used;

static void sbuf_event_cb(evutil_socket_t fd, short what, void *arg);

bool sbuf_global_init(struct event_base *base, int pkt_buf)
{
	sb_base = base;
	iobuf_size = (uint32_t)pkt_buf;
	iobuf_slab = slab_new("iobuf", sizeof(IoBuf) + iobuf_size);
	return iobuf_slab != NULL;
}

void sbuf_global_cleanup(void)
{
	slab_free(iobuf_slab);
	iobuf_slab = NULL;
}

int sbuf_buffers_used(void)
{
	return iobufs_used;
}

static IoBuf *iobuf_get(void)
{
	IoBuf *b = slab_alloc_raw(iobuf_slab);

	if (!b)
		return NULL;
	b->done = b->scan = b->wpos = 0;
	b->size = iobuf_size;
	b->big = false;
	iobufs_used++;
	return b;
}

static void iobuf_put(IoBuf *b)
{
	if (!b)
		return;
	iobufs_used--;
	if (b->big)
		free(b);
	else
		slab_release(iobuf_slab, b);
}

/* Move unsent bytes to the front of the buffer. */
static void iobuf_compact(IoBuf *b)
{
	if (b->done == 0)
		return;
	memmove(b->data, b->data + b->done, b->wpos - b->done);
	b->scan -= b->done;
	b->wpos -= b->done;
	b->done = 0;
}

/* Make room for a whole message of <total> bytes starting at scan; false on out of memory.
 * The caller checked total against max_hold, so scan + total cannot wrap. */
static bool sbuf_make_room(Sbuf *sb, uint32_t total)
{
	IoBuf *b = sb->buf, *nb;
	size_t need;

	iobuf_compact(b);
	need = (size_t)b->scan + total;
	if (need <= b->size)
		return true;
	nb = malloc(sizeof(IoBuf) + need);
	if (!nb)
		return false;
	memcpy(nb, b, sizeof(IoBuf));
	memcpy(nb->data, b->data, b->wpos);
	nb->size = (uint32_t)need;
	nb->big = true;
	iobufs_used++;
	iobuf_put(b);
	sb->buf = nb;
	return true;
}

static bool sbuf_wants_write(const Sbuf *sb)
{
	return sbuf_has_pending_output(sb) || sb->blocked_src != NULL || sb->connecting;
}

/* Register exactly the events this socket needs now. */
static void sbuf_update_events(Sbuf *sb)
{
	short want = 0;

	if (sb->closed)
		return;
	if (!sb->flush_blocked && !sb->buf_full && !sb->out_blocked && !sb->reading_paused &&
	    !sb->connecting)
		want |= EV_READ;
	if (sbuf_wants_write(sb))
		want |= EV_WRITE;
	if (sb->ev_set && sb->ev_flags == want)
		return;
	if (sb->ev_set) {
		event_del(&sb->ev);
		sb->ev_set = false;
	}
	sb->ev_flags = want;
	if (!want)
		return;
	event_assign(&sb->ev, sb_base, sb->fd, want | EV_PERSIST, sbuf_event_cb, sb);
	if (event_add(&sb->ev, NULL) == 0)
		sb->ev_set = true;
}

static void sbuf_init_common(Sbuf *sb, int fd, const SbufOps *ops)
{
	memset(sb, 0, sizeof(*sb));
	sb->fd = fd;
	sb->ops = ops;
	sb->startup = ops->startup_framing;
}

bool sbuf_accept(Sbuf *sb, int fd, const SbufOps *ops)
{
	sbuf_init_common(sb, fd, ops);
	sbuf_update_events(sb);
	return sb->ev_set;
}

bool sbuf_connect(Sbuf *sb, int fd, const SbufOps *ops, void (*on_connected)(Sbuf *sb))
{
	sbuf_init_common(sb, fd, ops);
	sb->connecting = true;
	sb->on_connected = on_connected;
	sbuf_update_events(sb);
	return sb->ev_set;
}

void sbuf_close(Sbuf *sb)
{
	if (sb->closed)
		return;
	sb->closed = true;
	if (sb->ops && sb->ops->on_release)
		sb->ops->on_release(sb);
	if (sb->ev_set)
		event_del(&sb->ev);
	sb->ev_set = false;
	if (sb->fd >= 0)
		close(sb->fd);
	sb->fd = -1;
	iobuf_put(sb->buf);
	sb->buf = NULL;
	free(sb->outq);
	sb->outq = NULL;
	/* a peer blocked on us will never be woken by our writes: let it go on */
	if (sb->blocked_src) {
		sb->blocked_src->flush_blocked = false;
		sb->blocked_src = NULL;
	}
	sbuf_unlink(sb);
}

void sbuf_link(Sbuf *a, Sbuf *b)
{
	a->dst = b;
	b->dst = a;
}

void sbuf_unlink(Sbuf *a)
{
	Sbuf *b = a->dst;

	if (!b)
		return;
	a->dst = NULL;
	if (b->dst == a)
		b->dst = NULL;
	/* neither side may wait for the other any more */
	if (b->blocked_src == a) {
		b->blocked_src = NULL;
		sbuf_update_events(b);
	}
	if (a->blocked_src == b) {
		a->blocked_src = NULL;
		b->flush_blocked = false;
		sbuf_update_events(a);
		sbuf_update_events(b);
	}
	if (a->flush_blocked) {
		a->flush_blocked = false;
		sbuf_update_events(a);
	}
}

void sbuf_drop_unflushed(Sbuf *sb)
{
	if (sb->buf)
		sb->buf->done = sb->buf->scan;
	sb->pkt_drop += sb->pkt_remain;
	sb->pkt_remain = 0;
	sb->stop_pending = false;
	sb->notify_flushed = false;
}

void sbuf_pause_reading(Sbuf *sb)
{
	sb->reading_paused = true;
	sbuf_update_events(sb);
}

void sbuf_resume_reading(Sbuf *sb)
{
	sb->reading_paused = false;
	sbuf_update_events(sb);
}

/* Write as much of the output queue as the socket takes. False on a hard error. */
static bool sbuf_drain_outq(Sbuf *sb)
{
	OutQueue *q = sb->outq;
	ssize_t n;

	while (q && q->pos < q->len) {
		n = send(sb->fd, q->data + q->pos, q->len - q->pos, MSG_NOSIGNAL);
		if (n > 0) {
			q->pos += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		return false;
	}
	if (q) {
		free(q);
		sb->outq = NULL;
	}
	return true;
}

bool sbuf_send(Sbuf *sb, const void *data, size_t len)
{
	const uint8_t *p = data;
	OutQueue *q;
	ssize_t n;

	if (sb->closed || sb->fd < 0 || len > SBUF_OUTQ_HARD_LIMIT)
		return false;
	if (!sbuf_has_pending_output(sb) && !sb->connecting) {
		for (;;) {
			n = send(sb->fd, p, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
		if (n == (ssize_t)len)
			return true;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return false; /* the read side will see the reset and close */
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
	}
	q = sb->outq;
	if (!q || len > q->cap - q->len) {
		size_t used = q ? q->len - q->pos : 0;
		size_t cap;
		OutQueue *nq;

		/* both terms are below the hard limit, so neither the sum nor the doubling wraps */
		if (len > SBUF_OUTQ_HARD_LIMIT || used > SBUF_OUTQ_HARD_LIMIT - len)
			return false;
		cap = used + len;
		cap = cap < 1024 ? 1024 : cap * 2;
		nq = malloc(sizeof(OutQueue) + cap);
		if (!nq)
			return false;
		nq->pos = 0;
		nq->len = used;
		nq->cap = cap;
		if (q)
			memcpy(nq->data, q->data + q->pos, used);
		free(q);
		sb->outq = q = nq;
	}
	memcpy(q->data + q->len, p, len);
	q->len += len;
	sbuf_update_events(sb);
	return true;
}

static inline bool sbuf_outq_congested(const Sbuf *sb)
{
	return sb->outq && sb->outq->len - sb->outq->pos > SBUF_OUTQ_SOFT_LIMIT;
}

/*
 * Before a message is handed to the owner: may it add to an output queue that is already over
 * the soft limit? The owner's handlers queue generated bytes on this socket (answers of its
 * own) and on the linked peer (rewritten messages), so either being congested stops the scan:
 * this socket waits for its own queue (out_blocked) or, like a blocked flush, for the peer.
 * True when scanning must stop.
 */
static bool sbuf_wait_for_output_room(Sbuf *sb)
{
	Sbuf *dst = sb->dst;

	if (sbuf_outq_congested(sb)) {
		sb->out_blocked = true;
		return true;
	}
	if (dst && !dst->closed && sbuf_outq_congested(dst)) {
		sb->flush_blocked = true;
		dst->blocked_src = sb;
		sbuf_update_events(dst);
		return true;
	}
	return false;
}

/* Report a dead socket to its owner, once. */
static void sbuf_report_close(Sbuf *sb, const char *reason)
{
	if (sb->closed || sb->close_reported)
		return;
	sb->close_reported = true;
	sb->ops->on_close(sb, reason);
}

/*
 * Send [done, scan) to the peer. Returns true when all of it went out. On a short write this
 * socket stops reading and waits for the peer to drain (backpressure).
 */
static bool sbuf_flush(Sbuf *sb)
{
	IoBuf *b = sb->buf;
	Sbuf *dst = sb->dst;
	ssize_t n;

	if (!dst || dst->closed) {
		/* nobody to forward to (the peer went away): the bytes are dropped */
		b->done = b->scan;
		return true;
	}
	if (sbuf_has_pending_output(dst) || dst->connecting)
		goto blocked;
	while (b->done < b->scan) {
		n = send(dst->fd, b->data + b->done, b->scan - b->done, MSG_NOSIGNAL);
		if (n > 0) {
			b->done += (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			goto blocked;
		sbuf_report_close(dst, n < 0 ? strerror(errno) : "connection closed");
		return false;
	}
	return true;
blocked:
	sb->flush_blocked = true;
	dst->blocked_src = sb;
	sbuf_update_events(dst);
	sbuf_update_events(sb);
	return false;
}

/* Header of the next message at scan; PKT_OK fills type/total. Startup packets have no type. */
static PktStatus sbuf_parse_header(Sbuf *sb, const uint8_t *p, uint32_t avail, uint8_t *type,
				   uint32_t *total)
{
	if (sb->startup) {
		uint32_t code;
		PktStatus st = pkt_parse_startup_header(p, avail, total, &code);
		*type = 0;
		return st;
	}
	return pkt_parse_header(p, avail, sb->max_packet ? sb->max_packet : 0x7fffffffu, type, total);
}


/*
 * Scan and forward what the buffer holds. Returns false when the socket was closed (by us or by
 * the handler), so callers stop touching it.
 */
static bool sbuf_process(Sbuf *sb)
{
	bool again = true;

	if (sb->in_process)
		return !sb->closed;
	sb->in_process = true;
	while (again && !sb->closed && sb->buf) {
		IoBuf *b = sb->buf;
		bool stop = false, retry = false;

		again = false;
		while (!stop && b->scan < b->wpos && !sb->paused) {
			uint32_t avail = b->wpos - b->scan, total, take;
			uint8_t type;
			const uint8_t *p = b->data + b->scan;
			SbufAction act;
			PktStatus st;

			if (sb->pkt_remain) {
				take = avail < sb->pkt_remain ? avail : sb->pkt_remain;
				b->scan += take;
				sb->pkt_remain -= take;
				continue;
			}
			if (sb->pkt_drop) {
				take = avail < sb->pkt_drop ? avail : sb->pkt_drop;
				memmove(b->data + b->scan, b->data + b->scan + take, avail - take);
				b->wpos -= take;
				sb->pkt_drop -= take;
				continue;
			}
			if (sbuf_wait_for_output_room(sb))
				break;
			st = sbuf_parse_header(sb, p, avail, &type, &total);
			if (st == PKT_INCOMPLETE)
				break;
			if (st == PKT_BAD) {
				sb->in_process = false;
				sbuf_report_close(sb, SBUF_REASON_BAD_LENGTH);
				return false;
			}
			act = sb->ops->on_packet(sb, type, total, p, avail < total ? avail : total);
			if (sb->closed || act == SB_CLOSED) {
				sb->in_process = false;
				return false;
			}
			b = sb->buf; /* the handler may have sent things, never swapped buffers */
			switch (act) {
			case SB_FORWARD_STOP:
				sb->stop_pending = true;
				stop = true;
				/* fallthrough */
			case SB_FORWARD:
				take = avail < total ? avail : total;
				b->scan += take;
				sb->pkt_remain = total - take;
				break;
			case SB_CONSUMED:
				if (total <= avail) {
					if (b->done == b->scan) {
						b->done = b->scan = b->scan + total;
					} else {
						memmove(b->data + b->scan, b->data + b->scan + total,
							avail - total);
						b->wpos -= total;
					}
				} else {
					sb->pkt_drop = total - avail;
					b->wpos = b->scan;
				}
				break;
			case SB_NEED_FULL:
				if (total > sbuf_hold_limit(sb)) {
					sb->in_process = false;
					sbuf_report_close(sb, SBUF_REASON_TOO_LARGE);
					return false;
				}
				if (!sbuf_make_room(sb, total)) {
					sb->in_process = false;
					sbuf_report_close(sb, "out of memory");
					return false;
				}
				b = sb->buf;
				stop = true;
				break;
			case SB_PAUSE:
				sb->paused = true;
				stop = true;
				break;
			case SB_FLUSH_RETRY:
				stop = retry = true;
				break;
			case SB_CLOSED:
				break;
			}
		}
		if (b->done < b->scan && !sbuf_flush(sb)) {
			if (sb->closed || sb->flush_blocked)
				break; /* blocked on the peer */
			/* the peer died: its owner dealt with what was meant for it; go on with the
			 * rest of the input, which must not wait for more bytes that may never come */
			again = true;
			continue;
		}
		if (sb->closed)
			break;
		if (retry)
			again = true;
		b = sb->buf;
		if (sb->notify_flushed && !sbuf_has_unflushed(sb) && !sb->stop_pending) {
			sb->notify_flushed = false;
			if (sb->ops->on_flushed)
				sb->ops->on_flushed(sb);
			if (sb->closed)
				break;
			again = true;
		}
		b = sb->buf;
		if (sb->stop_pending) {
			sb->stop_pending = false;
			sb->ops->on_flushed(sb);
			if (sb->closed)
				break;
			again = true;
		}
		b = sb->buf;
		if (b && b->done == b->wpos) {
			iobuf_put(b);
			sb->buf = NULL;
			sb->buf_full = false;
		} else if (b) {
			/* recomputed every time: a buffer grown for a whole message (SB_NEED_FULL) has
			 * room again, and reading must resume or the message never completes */
			if (b->wpos == b->size && !sb->paused)
				iobuf_compact(b);
			sb->buf_full = b->wpos == b->size;
		} else {
			sb->buf_full = false;
		}
	}
	sb->in_process = false;
	if (!sb->closed)
		sbuf_update_events(sb);
	return !sb->closed;
}

void sbuf_continue(Sbuf *sb)
{
	sb->paused = false;
	if (sb->closed)
		return;
	if (sb->buf)
		sbuf_process(sb);
	else
		sbuf_update_events(sb);
}

static void sbuf_read(Sbuf *sb)
{
	IoBuf *b;
	ssize_t n;

	if (!sb->buf) {
		sb->buf = iobuf_get();
		if (!sb->buf) {
			sbuf_report_close(sb, "out of memory for I/O buffer");
			return;
		}
	}
	b = sb->buf;
	if (b->wpos == b->size) {
		iobuf_compact(b);
		if (b->wpos == b->size) {
			sb->buf_full = true;
			sbuf_update_events(sb);
			return;
		}
	}
	n = recv(sb->fd, b->data + b->wpos, b->size - b->wpos, 0);
	if (n > 0) {
		b->wpos += (uint32_t)n;
		if (sb->bytes_in)
			*sb->bytes_in += (uint64_t)n;
		sbuf_process(sb);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		goto done;
	sbuf_report_close(sb, n == 0 ? "connection closed by peer" : strerror(errno));
	return;
done:
	if (b->done == b->wpos) {
		iobuf_put(b);
		sb->buf = NULL;
	}
}

static void sbuf_connected(Sbuf *sb)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(sb->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		sbuf_report_close(sb, strerror(err));
		return;
	}
	sb->connecting = false;
	sbuf_update_events(sb);
	if (sb->on_connected)
		sb->on_connected(sb);
}

static void sbuf_event_cb(evutil_socket_t fd, short what, void *arg)
{
	Sbuf *sb = arg;

	if (sb->connecting) {
		if (what & (EV_WRITE | EV_READ))
			sbuf_connected(sb);
		return;
	}
	if (what & EV_WRITE) {
		if (!sbuf_drain_outq(sb)) {
			sbuf_report_close(sb, strerror(errno));
			return;
		}
		if (sb->out_blocked && !sbuf_outq_congested(sb)) {
			sb->out_blocked = false;
			sbuf_process(sb);
			if (sb->closed)
				return;
		}
		if (!sbuf_has_pending_output(sb) && sb->blocked_src) {
			Sbuf *src = sb->blocked_src;

			sb->blocked_src = NULL;
			src->flush_blocked = false;
			sbuf_process(src);
			if (sb->closed)
				return;
		}
		sbuf_update_events(sb);
	}
	if ((what & EV_READ) && !sb->closed)
		sbuf_read(sb);
}
