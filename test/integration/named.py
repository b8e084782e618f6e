"""A BIND named for the integration tests, the demo and the failover bench.

pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).

As in shared notes/dns.md section 4: a temp dir, `named -g` in the foreground (logs to stderr, no
syslog), a free UDP+TCP port on 127.0.0.1, no rndc channel, a hmac-sha256 TSIG key made by
tsig-keygen. Zones: pg.test, updatable with the key (update-policy zonesub ANY), and locked.test
with no update policy at all (every UPDATE is REFUSED). Stopped by its PID (SIGTERM, then
SIGKILL).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NAMED = shutil.which("named") or "/usr/sbin/named"
TSIG_KEYGEN = shutil.which("tsig-keygen") or "/usr/sbin/tsig-keygen"
DIG = shutil.which("dig") or "/usr/bin/dig"
KEY_NAME = "pgpool-update"

ZONE_TEMPLATE = """$TTL 300
@	IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 60
@	IN NS ns.{zone}.
ns	IN A 127.0.0.1
primary	IN A 127.0.0.250
"""


def available():
    """True when named, tsig-keygen and dig are installed."""
    return all(os.access(p, os.X_OK) for p in (NAMED, TSIG_KEYGEN, DIG))


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (named listens on both)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise RuntimeError("no free port")


class Named:
    """One BIND named in a temp dir, on 127.0.0.1:<port>, serving <updatable> zones (TSIG
    update policy) and <locked> zones (no update policy)."""

    def __init__(self, updatable=("pg.test",), locked=("locked.test",)):
        self.dir = tempfile.mkdtemp(prefix="pgpilot-named-")
        self.port = free_port()
        self.key_file = os.path.join(self.dir, "tsig.key")
        self.key_name = KEY_NAME
        self.proc = None
        self.log = None
        self.log_path = os.path.join(self.dir, "named.log")
        with open(self.key_file, "w") as f:
            subprocess.run([TSIG_KEYGEN, "-a", "hmac-sha256", KEY_NAME], stdout=f, check=True)
        zones = []
        for zone in list(updatable) + list(locked):
            with open(os.path.join(self.dir, zone + ".zone"), "w") as f:
                f.write(ZONE_TEMPLATE.format(zone=zone))
        for zone in updatable:
            zones.append(f'zone "{zone}" {{ type primary; file "{zone}.zone";\n'
                         f'  update-policy {{ grant {KEY_NAME} zonesub ANY; }}; }};')
        for zone in locked:
            zones.append(f'zone "{zone}" {{ type primary; file "{zone}.zone"; }};')
        d = self.dir
        conf = f"""
options {{ directory "{d}"; pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key"; managed-keys-directory "{d}";
  listen-on port {self.port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no; notify no; }};
controls {{ }};
include "{self.key_file}";
""" + "\n".join(zones) + "\n"
        self.conf = os.path.join(d, "named.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        subprocess.run(["named-checkconf", self.conf], check=True)

    def start(self, timeout=20):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([NAMED, "-g", "-n", "1", "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("named exited: " + self.log_text())
            if self.dig("pg.test", "SOA"):
                return self
            time.sleep(0.2)
        raise RuntimeError("named did not answer: " + self.log_text())

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def dig(self, name, rtype="A"):
        """The sorted answers for name/rtype (empty on no answer or failure)."""
        r = subprocess.run([DIG, "@127.0.0.1", "-p", str(self.port), "+time=1", "+tries=1",
                            "+short", name, rtype], capture_output=True, text=True)
        if r.returncode != 0:
            return []
        return sorted(line for line in r.stdout.split("\n") if line)

    def dig_command(self, name, rtype="A"):
        """The dig command line a person would type to see the record."""
        return f"dig @127.0.0.1 -p {self.port} +short {name} {rtype}"

    def stop(self, cleanup=True):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None
        if cleanup:
            shutil.rmtree(self.dir, ignore_errors=True)
