/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Unit tests of protocol/pktbuf.c: every canned message byte for byte, startup packets read
 * back through packet.c, growth, several messages in one buffer, and the sticky failure of a
 * fixed buffer that overflows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/packet.h"
#include "protocol/pktbuf.h"

/* compare the buffer with a literal that may hold NULs */
#define assert_bytes(pb, lit)                                                                      \
	do {                                                                                       \
		assert_false((pb)->failed);                                                        \
		assert_int_equal((pb)->len, sizeof(lit) - 1);                                      \
		assert_memory_equal((pb)->buf, lit, sizeof(lit) - 1);                              \
	} while (0)

static void test_be_helpers(void **state)
{
	uint8_t b[4];

	put_be16(b, 0xa1b2);
	assert_memory_equal(b, "\xa1\xb2", 2);
	assert_int_equal(get_be16(b), 0xa1b2);
	put_be32(b, 0xdeadbeefu);
	assert_memory_equal(b, "\xde\xad\xbe\xef", 4);
	assert_int_equal(get_be32(b), 0xdeadbeefu);
}

static void test_query(void **state)
{
	PktBuf pb;

	pktbuf_init(&pb, 0);
	pktbuf_write_query(&pb, "SELECT 1");
	assert_bytes(&pb, "Q\0\0\0\x0dSELECT 1\0");
	pktbuf_cleanup(&pb);
	assert_null(pb.buf);
}

static void test_error_and_notice(void **state)
{
	PktBuf pb;

	pktbuf_init(&pb, 16);
	pktbuf_write_error(&pb, "FATAL", "28P01",
			   "password authentication failed for user \"bob\"");
	/* 4 + S "FATAL" 7 + V "FATAL" 7 + C "28P01" 7 + M msg 47 + terminator 1 = 73 */
	assert_bytes(&pb, "E\0\0\0\x49"
			  "SFATAL\0VFATAL\0C28P01\0"
			  "Mpassword authentication failed for user \"bob\"\0\0");
	pktbuf_reset(&pb);
	assert_int_equal(pb.len, 0);
	pktbuf_write_notice(&pb, "WARNING", "01000", "x");
	assert_bytes(&pb, "N\0\0\0\x21SWARNING\0VWARNING\0C01000\0Mx\0\0");
	pktbuf_cleanup(&pb);
}

static void test_small_messages(void **state)
{
	static const uint8_t salt[4] = {0xde, 0xad, 0x00, 0x01};
	PktBuf pb;

	pktbuf_init(&pb, 0);
	pktbuf_write_ready(&pb, 'I');
	assert_bytes(&pb, "Z\0\0\0\x05I");
	pktbuf_reset(&pb);
	pktbuf_write_auth_request(&pb, 0, NULL, 0); /* AuthenticationOk */
	assert_bytes(&pb, "R\0\0\0\x08\0\0\0\0");
	pktbuf_reset(&pb);
	pktbuf_write_auth_request(&pb, 5, salt, 4); /* AuthenticationMD5Password */
	assert_bytes(&pb, "R\0\0\0\x0c\0\0\0\x05\xde\xad\0\x01");
	pktbuf_reset(&pb);
	pktbuf_write_auth_request(&pb, 10, "SCRAM-SHA-256\0", 15); /* AuthenticationSASL */
	assert_bytes(&pb, "R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
	pktbuf_reset(&pb);
	pktbuf_write_parameter_status(&pb, "client_encoding", "UTF8");
	assert_bytes(&pb, "S\0\0\0\x19"
			  "client_encoding\0UTF8\0");
	pktbuf_reset(&pb);
	pktbuf_write_backend_key(&pb, 0x01020304u, 0xfffefdfcu);
	assert_bytes(&pb, "K\0\0\0\x0c\x01\x02\x03\x04\xff\xfe\xfd\xfc");
	pktbuf_reset(&pb);
	pktbuf_write_command_complete(&pb, "SELECT 3");
	assert_bytes(&pb, "C\0\0\0\x0dSELECT 3\0");
	pktbuf_cleanup(&pb);
}

static void test_row_description_and_data_row(void **state)
{
	static const char *const names[] = {"id", "name"};
	static const uint32_t oids[] = {23, 25};
	static const char *const values[] = {"42", NULL};
	PktBuf pb;

	pktbuf_init(&pb, 0);
	pktbuf_write_row_description(&pb, 2, names, oids);
	/* 4 + 2 + ("id\0" + 18) + ("name\0" + 18) = 50 */
	assert_bytes(&pb, "T\0\0\0\x32\0\x02"
			  "id\0\0\0\0\0\0\0\0\0\0\x17\xff\xff\xff\xff\xff\xff\0\0"
			  "name\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0");
	pktbuf_reset(&pb);
	/* without oids every column is text (25) */
	pktbuf_write_row_description(&pb, 1, names, NULL);
	assert_bytes(&pb,
		     "T\0\0\0\x1b\0\x01id\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0");
	pktbuf_reset(&pb);
	pktbuf_write_data_row(&pb, 2, values);
	assert_bytes(&pb, "D\0\0\0\x10\0\x02\0\0\0\x02"
			  "42\xff\xff\xff\xff");
	pktbuf_reset(&pb);
	pktbuf_write_data_row(&pb, 0, NULL);
	assert_bytes(&pb, "D\0\0\0\x06\0\0");
	pktbuf_cleanup(&pb);
}

/* An untyped startup packet built here is read back by packet.c. */
static void test_startup_packet_roundtrip(void **state)
{
	PktBuf pb;
	uint32_t total = 0, code = 0;
	StartupParams p;
	char err[128];

	pktbuf_init(&pb, 0);
	pktbuf_start(&pb, 0);
	pktbuf_put_u32(&pb, PROTO_V3);
	pktbuf_put_string(&pb, "user");
	pktbuf_put_string(&pb, "alice");
	pktbuf_put_string(&pb, "database");
	pktbuf_put_string(&pb, "db1");
	pktbuf_put_u8(&pb, 0);
	pktbuf_finish(&pb);
	assert_bytes(&pb, "\0\0\0\x21\0\x03\0\0user\0alice\0database\0db1\0\0");
	assert_int_equal(pkt_parse_startup_header(pb.buf, pb.len, &total, &code), PKT_OK);
	assert_int_equal(total, pb.len);
	assert_int_equal(code, PROTO_V3);
	assert_true(pkt_parse_startup_params(pb.buf + 8, pb.len - 8, &p, err, sizeof(err)));
	assert_string_equal(p.user, "alice");
	assert_string_equal(p.database, "db1");
	pktbuf_cleanup(&pb);
}

/* Several messages back to back: each length covers its own message only. */
static void test_several_messages(void **state)
{
	PktBuf pb;
	uint8_t type;
	uint32_t total, off = 0;

	pktbuf_init(&pb, 4);
	pktbuf_write_parameter_status(&pb, "a", "b");
	pktbuf_write_backend_key(&pb, 1, 2);
	pktbuf_write_ready(&pb, 'T');
	assert_false(pb.failed);
	assert_int_equal(pkt_parse_header(pb.buf + off, pb.len - off, 1000, &type, &total), PKT_OK);
	assert_int_equal(type, 'S');
	assert_int_equal(total, 9);
	off += total;
	assert_int_equal(pkt_parse_header(pb.buf + off, pb.len - off, 1000, &type, &total), PKT_OK);
	assert_int_equal(type, 'K');
	assert_int_equal(total, 13);
	off += total;
	assert_int_equal(pkt_parse_header(pb.buf + off, pb.len - off, 1000, &type, &total), PKT_OK);
	assert_int_equal(type, 'Z');
	assert_int_equal(total, 6);
	assert_int_equal(off + total, pb.len);
	assert_int_equal(pb.buf[pb.len - 1], 'T');
	pktbuf_cleanup(&pb);
}

/* The buffer grows past its initial size and keeps what was written. */
static void test_growth(void **state)
{
	uint8_t big[5000];
	PktBuf pb;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	pktbuf_init(&pb, 1);
	pktbuf_put_u16(&pb, 0x1234);
	pktbuf_put_bytes(&pb, big, sizeof(big));
	pktbuf_put_bytes(&pb, NULL, 0);
	assert_false(pb.failed);
	assert_int_equal(pb.len, 2 + sizeof(big));
	assert_true(pb.cap >= pb.len);
	assert_memory_equal(pb.buf, "\x12\x34", 2);
	assert_memory_equal(pb.buf + 2, big, sizeof(big));
	pktbuf_cleanup(&pb);
}

/* A spill buffer stays in its storage while messages fit, moves to the heap (with what it
 * held) when one does not, and never writes past the storage. */
static void test_spill(void **state)
{
	uint8_t storage[32];
	char big[100];
	PktBuf pb;

	memset(storage, 0xaa, sizeof(storage));
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	pktbuf_init_spill(&pb, storage, 16);
	pktbuf_write_ready(&pb, 'I');
	assert_false(pb.failed);
	assert_ptr_equal(pb.buf, storage);
	pktbuf_write_query(&pb, big);
	assert_false(pb.failed);
	assert_ptr_not_equal(pb.buf, storage);
	assert_int_equal(pb.len, 6 + 5 + sizeof(big));
	assert_memory_equal(pb.buf, "Z\0\0\0\x05I", 6);
	assert_memory_equal(pb.buf + 11, big, sizeof(big));
	for (size_t i = 16; i < sizeof(storage); i++)
		assert_int_equal(storage[i], 0xaa);
	pktbuf_cleanup(&pb); /* frees the heap copy, not the storage (ASan checks) */

	pktbuf_init_spill(&pb, storage, sizeof(storage));
	pktbuf_write_query(&pb, "SELECT 1");
	assert_ptr_equal(pb.buf, storage);
	pktbuf_cleanup(&pb);
}

/* A fixed buffer never writes past its storage; overflow is sticky until reset. */
static void test_fixed_overflow(void **state)
{
	uint8_t storage[32];
	PktBuf pb;

	memset(storage, 0xaa, sizeof(storage));
	pktbuf_init_fixed(&pb, storage, 16);
	assert_true(pb.fixed);
	pktbuf_write_ready(&pb, 'I'); /* 6 bytes */
	assert_false(pb.failed);
	pktbuf_write_query(&pb, "SELECT 1"); /* 14 more: does not fit */
	assert_true(pb.failed);
	/* later writes are ignored, even ones that would fit */
	pktbuf_put_u8(&pb, 'x');
	assert_true(pb.failed);
	assert_true(pb.len <= 16);
	for (size_t i = 16; i < sizeof(storage); i++)
		assert_int_equal(storage[i], 0xaa);
	/* the message that fitted is intact */
	assert_memory_equal(storage, "Z\0\0\0\x05I", 6);

	/* reset clears the failure; an exact fit works */
	pktbuf_reset(&pb);
	assert_false(pb.failed);
	pktbuf_write_query(&pb, "SELECT 1"); /* 14 */
	pktbuf_put_u16(&pb, 0xbeef);         /* 16 */
	assert_false(pb.failed);
	assert_int_equal(pb.len, 16);
	assert_ptr_equal(pb.buf, storage);
	assert_memory_equal(storage, "Q\0\0\0\x0dSELECT 1\0\xbe\xef", 16);
	pktbuf_put_u8(&pb, 0);
	assert_true(pb.failed);
	assert_int_equal(storage[16], 0xaa);
	/* cleanup must not free caller storage (ASan would report it) */
	pktbuf_cleanup(&pb);
	assert_null(pb.buf);
}

/* An error message too large for a fixed buffer fails without writing its length anywhere. */
static void test_fixed_error_overflow(void **state)
{
	uint8_t storage[40];
	PktBuf pb;

	memset(storage, 0xaa, sizeof(storage));
	pktbuf_init_fixed(&pb, storage, 24);
	pktbuf_write_error(&pb, "ERROR", "08P01", "a message that does not fit");
	assert_true(pb.failed);
	for (size_t i = 24; i < sizeof(storage); i++)
		assert_int_equal(storage[i], 0xaa);
	pktbuf_cleanup(&pb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_be_helpers),
	    cmocka_unit_test(test_query),
	    cmocka_unit_test(test_error_and_notice),
	    cmocka_unit_test(test_small_messages),
	    cmocka_unit_test(test_row_description_and_data_row),
	    cmocka_unit_test(test_startup_packet_roundtrip),
	    cmocka_unit_test(test_several_messages),
	    cmocka_unit_test(test_growth),
	    cmocka_unit_test(test_spill),
	    cmocka_unit_test(test_fixed_overflow),
	    cmocka_unit_test(test_fixed_error_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
