/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Sbuf: one socket of the data path, with its receive buffer and its event. Bytes read from a
 * socket are cut into protocol messages; for each message header the owner's handler decides
 * whether the message is forwarded to the peer socket (streamed: bodies are never copied, a
 * message larger than the buffer passes through in pieces), consumed, or whether processing
 * pauses. Forwarding writes straight from the receive buffer into the peer's socket; when the
 * peer cannot take more, reading stops on this side until the peer drains (backpressure).
 * Messages the pooler generates itself go through the socket's small output queue.
 *
 * The receive buffer (an IoBuf of pkt_buf bytes) is only attached while data is pending, so an
 * idle connection costs no buffer.
 */
#ifndef PGPILOT_POOLER_SBUF_H
#define PGPILOT_POOLER_SBUF_H

#include "protocol/bytes.h"

#include <event2/event.h>
#include <event2/event_struct.h>

typedef struct IoBuf {
	uint32_t done; /* [0, done): already sent on */
	uint32_t scan; /* [done, scan): scanned, to be sent; [scan, wpos): not yet scanned */
	uint32_t wpos; /* end of received data */
	uint32_t size;
	bool big;      /* malloc'd beyond pkt_buf for one large inspected message */
	uint8_t data[];
} IoBuf;

typedef struct OutQueue {
	size_t pos, len, cap;
	uint8_t data[];
} OutQueue;

/*
 * Bounds on what a peer can make the pooler hold (style.md item 35).
 * - Generated output: a socket whose output queue holds more than SBUF_OUTQ_SOFT_LIMIT bytes
 *   stops the processing of every message that could add to it (its own input, and the input
 *   of its linked peer) until it drains; sbuf_send() refuses to grow a queue beyond
 *   SBUF_OUTQ_HARD_LIMIT, which only a single enormous generated reply could reach.
 * - Held messages: a message the owner needs whole (SB_NEED_FULL) may be at most max_hold
 *   bytes (SBUF_HOLD_LIMIT unless the owner sets a lower one); a larger one ends the
 *   connection with SBUF_REASON_TOO_LARGE.
 */
#define SBUF_OUTQ_SOFT_LIMIT (128u * 1024u)
#define SBUF_OUTQ_HARD_LIMIT (256u * 1024u * 1024u)
#define SBUF_HOLD_LIMIT (64u * 1024u * 1024u)

/* Reasons sbuf gives to on_close for protocol violations (compare the pointers). */
extern const char SBUF_REASON_BAD_LENGTH[];
extern const char SBUF_REASON_TOO_LARGE[];

typedef enum SbufAction {
	SB_FORWARD,	 /* pass the message to the peer */
	SB_FORWARD_STOP, /* pass it, then stop scanning until it is flushed (on_flushed runs) */
	SB_CONSUMED,	 /* the handler used the message; drop it */
	SB_NEED_FULL,	 /* call again when the whole message is in the buffer */
	SB_PAUSE,	 /* stop scanning; the owner resumes with sbuf_continue() */
	SB_CLOSED,	 /* the handler closed the connection: touch nothing */
	SB_FLUSH_RETRY,	 /* send what was scanned before this message to the peer, then call the
			  * handler again for it (so that bytes the handler queues with sbuf_send()
			  * land after them); only valid while sbuf_has_unflushed() */
} SbufAction;

struct Sbuf;

/* Called for each message header. <pkt> points at the type byte; <avail> bytes of the <total>
 * bytes of the message are in the buffer (avail >= 5). */
typedef SbufAction (*SbufPacketFunc)(struct Sbuf *sb, uint8_t type, uint32_t total,
				     const uint8_t *pkt, uint32_t avail);
/* Called once when a socket reads EOF or fails; the owner closes it. */
typedef void (*SbufCloseFunc)(struct Sbuf *sb, const char *reason);
/* Called when data up to an SB_FORWARD_STOP message has been sent to the peer, and when
 * everything scanned was sent after the owner set notify_flushed. */
typedef void (*SbufFlushedFunc)(struct Sbuf *sb);
/* Called once by sbuf_close(): the owner releases what it attached to the connection. */
typedef void (*SbufReleaseFunc)(struct Sbuf *sb);

typedef struct SbufOps {
	SbufPacketFunc on_packet;
	SbufCloseFunc on_close;
	SbufFlushedFunc on_flushed;
	SbufReleaseFunc on_release; /* may be NULL */
	bool startup_framing; /* messages have no type byte (first packet of a client) */
} SbufOps;

typedef struct Sbuf {
	struct event ev;
	const SbufOps *ops;
	struct Sbuf *dst;	/* peer that forwarded messages go to, or NULL */
	struct Sbuf *blocked_src; /* a peer waiting for this socket to drain */
	IoBuf *buf;
	OutQueue *outq;
	int fd;
	uint32_t pkt_remain;	/* bytes of the message being passed through, not yet received */
	uint32_t pkt_drop;	/* bytes of a consumed message still to discard */
	short ev_flags;		/* events currently registered */
	bool ev_set;		/* event assigned */
	uint32_t max_packet;	/* max_packet_size for this side; 0 = 2^31-1 */
	uint32_t max_hold;	/* largest message held whole; 0 = SBUF_HOLD_LIMIT */
	bool closed;
	bool close_reported;	/* on_close already ran */
	bool connecting;	/* non-blocking connect in progress */
	bool stop_pending;	/* an SB_FORWARD_STOP message is waiting to be flushed */
	bool paused;		/* handler returned SB_PAUSE */
	bool flush_blocked;	/* forwarded bytes wait for dst to drain: not reading */
	bool buf_full;		/* receive buffer full and nothing can move: not reading */
	bool out_blocked;	/* own output queue over the soft limit: not processing input */
	bool reading_paused;	/* owner stopped reading (sbuf_pause_reading) */
	bool startup;		/* startup framing for the next message */
	bool in_process;	/* reentrancy guard */
	bool notify_flushed;	/* call on_flushed once everything scanned has been sent */
	void (*on_connected)(struct Sbuf *sb);
	uint64_t *bytes_in;	/* counters to add received bytes to, or NULL */
} Sbuf;

bool sbuf_global_init(struct event_base *base, int pkt_buf) _MUSTCHECK;
void sbuf_global_cleanup(void);

/* Take over an accepted, non-blocking socket. */
bool sbuf_accept(Sbuf *sb, int fd, const SbufOps *ops) _MUSTCHECK;
/* Take over a socket whose non-blocking connect() is in progress: on_connected runs once it is
 * established (a failure goes to on_close), then on_packet for what the server says. */
bool sbuf_connect(Sbuf *sb, int fd, const SbufOps *ops, void (*on_connected)(Sbuf *sb)) _MUSTCHECK;
/* Stop events, close the socket, free buffers. Safe to call twice. */
void sbuf_close(Sbuf *sb);

/* Link two sockets: messages forwarded by a go to b and back. */
void sbuf_link(Sbuf *a, Sbuf *b);
void sbuf_unlink(Sbuf *a);

/* Queue bytes the pooler generated; sent before anything forwarded later. False if the socket
 * is gone, memory ran out or the queue would pass SBUF_OUTQ_HARD_LIMIT: the caller ends the
 * connection. */
bool sbuf_send(Sbuf *sb, const void *data, size_t len);
/* Resume a paused (SB_PAUSE) socket: scan the buffered data again. */
void sbuf_continue(Sbuf *sb);
/* Bytes waiting to be written by sbuf_send. */
static inline bool sbuf_has_pending_output(const Sbuf *sb)
{
	return sb->outq && sb->outq->pos < sb->outq->len;
}
/* Does the receive buffer hold unprocessed bytes? */
static inline bool sbuf_has_input(const Sbuf *sb)
{
	return sb->buf && sb->buf->scan < sb->buf->wpos;
}
/* Scanned bytes not yet sent to the peer (or a message being passed through)? */
static inline bool sbuf_has_unflushed(const Sbuf *sb)
{
	return sb->pkt_remain || (sb->buf && sb->buf->done < sb->buf->scan);
}
/* The peer these bytes were meant for is gone: forget scanned bytes not yet sent, and the rest
 * of a message being passed through (it is discarded as it arrives). */
void sbuf_drop_unflushed(Sbuf *sb);
/* Stop or restart reading a socket (PAUSE of a client, for instance). */
void sbuf_pause_reading(Sbuf *sb);
void sbuf_resume_reading(Sbuf *sb);

/* The largest message this socket holds whole (SB_NEED_FULL). */
static inline uint32_t sbuf_hold_limit(const Sbuf *sb)
{
	return sb->max_hold && sb->max_hold < SBUF_HOLD_LIMIT ? sb->max_hold : SBUF_HOLD_LIMIT;
}

/* I/O buffers in use / free, for SHOW MEM and SHOW LISTS. */
int sbuf_buffers_used(void);

#endif
