"""Real brokers for tests: mosquitto and redis-server on free loopback ports, with their own temp dirs.

Both keep their data across a restart on the same port (mosquitto persistence, Redis AOF), so a test can
stop a broker mid-stream, start it again and still read every message on the broker side.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

INSTALL_HINT = "`make test` installs it (Debian packages mosquitto redis-server); or apt-get install -y {pkg}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str, package: str) -> str:
    """The path of ``name``; fails the test (never skips) when it is missing: `make test` installs it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT.format(pkg=package)}", pytrace=False)
    return path


class Server:
    """One broker process; ``start()`` waits until it answers, ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    name = ""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / f"{self.name}.log"

    @property
    def conn_str(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
            return True
        return False

    def start(self, timeout_s: float = 15.0) -> None:
        assert self.proc is None, f"{self.name} is already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name} did not start on port {self.port} within {timeout_s} s:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart_after(self, delay_s: float) -> None:
        self.stop()
        time.sleep(delay_s)
        self.start()


class Mosquitto(Server):
    """mosquitto listening on 127.0.0.1 only; anonymous unless users are given (then a password file)."""

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, users: dict[str, str] | None = None,
                 tls: dict[str, Path] | None = None) -> None:  # fmt: skip
        super().__init__(workdir, port)
        self.exe = binary("mosquitto", "mosquitto")
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {self.workdir}/",
                 "autosave_interval 1", f"log_dest file {self.log}", "user root"]  # fmt: skip
        if users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            tool = binary("mosquitto_passwd", "mosquitto")
            for user, password in users.items():
                subprocess.run([tool, "-b", str(passwd), user, password], check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.config = self.workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log.touch()

    def argv(self) -> list[str]:
        return [self.exe, "-c", str(self.config)]


class Redis(Server):
    """redis-server on 127.0.0.1 with an append-only file in its workdir (data survives a restart)."""

    name = "redis"

    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None,
                 tls: dict[str, Path] | None = None) -> None:  # fmt: skip
        super().__init__(workdir, port)
        self.exe = binary("redis-server", "redis-server")
        self.password = password
        self.tls = tls

    def argv(self) -> list[str]:
        args = [self.exe, "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--protected-mode", "no", "--logfile", str(self.log)]  # fmt: skip
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls["cert"]),
                     "--tls-key-file", str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                     "--tls-auth-clients", "no"]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def client(self):
        import redis

        kwargs = {}
        if self.tls:
            kwargs = {"ssl": True, "ssl_ca_certs": str(self.tls["ca"])}
        return redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=5, **kwargs)

    def entries(self, stream: str) -> list[tuple[dict, dict]]:
        """Every entry of ``stream`` as (decoded JSON payload, raw fields)."""
        with contextlib.closing(self.client()) as c:
            out = []
            for _id, fields in c.xrange(stream):
                out.append((json.loads(fields[b"payload"]), fields))
            return out


class MqttConsumer:
    """Subscribes to ``topic`` with a persistent session (QoS 1), so messages published while it was
    reconnecting after a broker restart are kept for it; records decoded payloads."""

    def __init__(self, server: Mosquitto, topic: str, client_id: str = "pyinfer-test-consumer") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)  # fmt: skip
        self.client.reconnect_delay_set(0.05, 0.2)

        def on_connect(client, _userdata, _flags, reason_code, _properties) -> None:
            if not reason_code.is_failure:
                client.subscribe(topic, qos=1)

        def on_subscribe(*_args) -> None:
            self._subscribed.set()

        def on_message(_client, _userdata, msg) -> None:
            with self._lock:
                self.raw.append(msg.payload)
                self.messages.append(json.loads(msg.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(server.host, server.port, keepalive=5)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the test consumer could not subscribe"

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[dict]:
        """The messages once at least ``count`` distinct ids arrived (or after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len({m["message_id"] for m in self.messages}) >= count:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl), as {"ca", "cert", "key"} paths."""
    openssl = binary("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                            "server.pem"))  # fmt: skip
    # The extensions a strict verifier wants (Python 3.13 sets VERIFY_X509_STRICT): key usages on both
    # certificates, key identifiers linking them.
    ca_cnf, ext = directory / "ca.cnf", directory / "ext.cnf"
    ca_cnf.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = pyinfer test CA\n"
        "[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n"
    )
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid, issuer\n"
    )

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-config", str(ca_cnf), "-extensions", "ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))  # fmt: skip
    for path in (key, cert, ca):
        path.chmod(0o644)  # mosquitto drops to user mosquitto when started as root
    return {"ca": ca, "cert": cert, "key": key}


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (a hung broker, a firewall
    that accepts and black-holes): connecting succeeds, every handshake waits for a reply that never comes."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.05)  # accept() polls, so close() can end the thread
        self.port = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def conn_str(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def accepted(self) -> int:
        return len(self._accepted)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed
                return
            self._accepted.append(conn)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._accepted:
            conn.close()
