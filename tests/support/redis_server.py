"""redis_server.py - a redis-server of a test's own: on a free loopback
port, nothing saved, started and waited for here, killed at the end.  Used
by test_cli.py and test_secrets.py (the C tests have tests/support/redis.c).
Python 3 standard library only.
"""
import shutil
import socket
import subprocess
import time


def free_port():
    """A loopback TCP port nothing listens on (at the moment it is asked)."""
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


class RedisServer:
    """redis-server --port PORT --bind 127.0.0.1, no persistence, with
    --requirepass when a password is given and --dir when a directory is.
    start() returns once it answers (any reply to a PING: NOAUTH counts) or
    raises RuntimeError; stop() kills it."""

    def __init__(self, password=None, directory=None, exe=None):
        self.exe = exe or shutil.which("redis-server")
        self.password = password
        self.directory = directory
        self.port = None
        self.proc = None

    def start(self, timeout=10.0):
        if not self.exe:
            raise RuntimeError("redis-server is not installed (scripts/deps.sh installs it)")
        self.port = free_port()
        argv = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]
        if self.directory:
            argv += ["--dir", self.directory]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as so:
                so.sendall(b"PING\r\n")
                return bool(so.recv(64))
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
