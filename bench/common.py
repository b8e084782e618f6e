# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# Measuring tools for bench.py: a light asyncio PostgreSQL client that only logs in (trust,
# clear-text, md5 or SCRAM-SHA-256) and then stays idle, so thousands of idle clients cost the
# bench little; /proc readers for a process's CPU time and resident memory; and a pgbench runner
# that parses the summary pgbench prints.

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import struct
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc readings

def cpu_seconds(pid):
    """utime + stime of process <pid> (all its threads), in seconds, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLK_TCK


def rss_bytes(pid):
    """Resident set size of <pid> from /proc/PID/status VmRSS, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line for pid %d" % pid)


# ---------------------------------------------------------------- pgbench

class PgbenchResult:
    def __init__(self, tps, latency_ms, transactions, failed, output):
        self.tps = tps
        self.latency_ms = latency_ms
        self.transactions = transactions
        self.failed = failed
        self.output = output


def parse_pgbench(output):
    """The figures of a pgbench run's summary; raises ValueError when a figure is missing."""

    def grab(pattern, conv, default=None):
        m = re.search(pattern, output, re.MULTILINE)
        if m is None:
            if default is not None:
                return default
            raise ValueError("pgbench output lacks %r:\n%s" % (pattern, output[-2000:]))
        return conv(m.group(1))

    return PgbenchResult(
        tps=grab(r"^tps = ([0-9.]+)", float),
        latency_ms=grab(r"^latency average = ([0-9.]+) ms", float),
        transactions=grab(r"^number of transactions actually processed: ([0-9]+)", int),
        failed=grab(r"^number of failed transactions: ([0-9]+)", int, 0),
        output=output)


def run_pgbench(pgbench, host, port, user, password, dbname, args, timeout):
    """Run pgbench with <args>; returns PgbenchResult, raises RuntimeError when it fails."""
    env = dict(os.environ, PGPASSWORD=password or "", PGAPPNAME="pgpilot-bench")
    argv = [pgbench, "-h", host, "-p", str(port), "-U", user] + list(args) + [dbname]
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError("pgbench did not finish within %d s: %s" % (timeout, " ".join(argv)))
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise RuntimeError("pgbench failed (status %d): %s\n%s"
                           % (r.returncode, " ".join(argv), out[-2000:]))
    return parse_pgbench(out)


# ---------------------------------------------------------------- raw protocol client

class PgError(Exception):
    """An ErrorResponse from the server, or a login the client cannot complete."""


def _startup_packet(user, dbname, appname):
    body = struct.pack("!I", 196608)  # protocol 3.0
    for k, v in (("user", user), ("database", dbname), ("application_name", appname)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _msg(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _error_text(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return "%s: %s (SQLSTATE %s)" % (fields.get("S", "ERROR"), fields.get("M", "?"),
                                      fields.get("C", "?"))


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it; no channel binding."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = "n=,r=" + self.nonce  # PostgreSQL takes the user from the startup packet

    def first(self):
        return ("n,," + self.first_bare).encode()

    def final(self, server_first):
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise PgError("SCRAM server nonce does not extend ours")
        salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iters)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        self.auth_message = ",".join((self.first_bare, server_first.decode(), without_proof))
        sig = hmac.digest(stored_key, self.auth_message.encode(), "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def check(self, server_final):
        want = hmac.digest(self.server_key, self.auth_message.encode(), "sha256")
        attrs = dict(a.split("=", 1) for a in server_final.decode().split(","))
        if base64.b64decode(attrs.get("v", "")) != want:
            raise PgError("SCRAM server signature does not match")


class IdleClient:
    """One logged-in client connection that stays idle until closed."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host, port, user, password, dbname, appname="pgpilot-bench-idle"):
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        try:
            await client._login(user, password, dbname, appname)
        except BaseException:
            writer.close()
            raise
        return client

    async def _read_msg(self):
        head = await self.reader.readexactly(5)
        kind, length = head[:1], struct.unpack("!I", head[1:])[0]
        if length < 4:
            raise PgError("bad message length %d" % length)
        return kind, await self.reader.readexactly(length - 4)

    async def _login(self, user, password, dbname, appname):
        self.writer.write(_startup_packet(user, dbname, appname))
        scram = None
        while True:
            kind, payload = await self._read_msg()
            if kind == b"E":
                raise PgError(_error_text(payload))
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            code = struct.unpack("!I", payload[:4])[0]
            if code == 0:
                continue
            if password is None:
                raise PgError("server asks for a password (auth code %d), none given" % code)
            if code == 3:
                self.writer.write(_msg(b"p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                self.writer.write(_msg(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:
                mechs = payload[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechs:
                    raise PgError("no supported SASL mechanism in %r" % mechs)
                scram = _Scram(password)
                first = scram.first()
                self.writer.write(_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first))
                                       + first))
            elif code == 11 and scram is not None:
                self.writer.write(_msg(b"p", scram.final(payload[4:])))
            elif code == 12 and scram is not None:
                scram.check(payload[4:])
            else:
                raise PgError("unsupported authentication request %d" % code)

    async def query(self, sql):
        """Simple-protocol query; returns the data rows as lists of str (None for NULL)."""
        self.writer.write(_msg(b"Q", sql.encode() + b"\0"))
        rows, error = [], None
        while True:
            kind, payload = await self._read_msg()
            if kind == b"D":
                n = struct.unpack("!H", payload[:2])[0]
                pos, row = 2, []
                for _ in range(n):
                    ln = struct.unpack("!i", payload[pos:pos + 4])[0]
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + ln].decode())
                        pos += ln
                rows.append(row)
            elif kind == b"E":
                error = _error_text(payload)
            elif kind == b"Z":
                if error:
                    raise PgError(error)
                return rows

    def is_open(self):
        """True while the server has neither closed the connection nor sent anything unasked."""
        return not self.reader.at_eof() and not self.writer.is_closing() and \
            len(self.reader._buffer) == 0  # a pooler error/notice would sit here

    async def close(self):
        try:
            self.writer.write(_msg(b"X", b""))
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def open_idle_clients(n, host, port, user, password, dbname, concurrency=64, timeout=60.0):
    """
    Log in <n> clients, at most <concurrency> logins in flight (so the listen backlog does not
    overflow into SYN retries). Returns (clients, errors): the logged-in ones and a list of
    error strings for the others. Never raises for a single failed login.
    """
    sem = asyncio.Semaphore(concurrency)
    clients, errors = [], []

    async def one():
        async with sem:
            try:
                c = await asyncio.wait_for(
                    IdleClient.connect(host, port, user, password, dbname), timeout)
                clients.append(c)
            except (OSError, PgError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                errors.append("%s: %s" % (type(e).__name__, e))

    await asyncio.gather(*(one() for _ in range(n)))
    return clients, errors


async def close_clients(clients, concurrency=512):
    for i in range(0, len(clients), concurrency):
        await asyncio.gather(*(c.close() for c in clients[i:i + concurrency]))
