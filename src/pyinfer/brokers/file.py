"""``proto=file``: messages appended to a file, one JSON text per line (JSON lines)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import IO

from pyinfer.brokers.base import BrokerError, ConnectionLost, Endpoint, Message, Transport


class FileTransport(Transport):
    """Appends each payload and a newline to the file named by ``conn-str``; a message counts as delivered
    once written and flushed to the operating system (``fsync = true`` in the config file: to the disk)."""

    name = "file"
    OPTIONS = frozenset({"fsync"})

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.path = endpoint.conn_str.removeprefix("file://")
        if not self.path:
            raise BrokerError("conn-str is empty: expected the path of the file to append to")
        self.fsync = endpoint.flag("fsync")
        self._file: IO[bytes] | None = None

    def connect(self) -> None:
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches, closed in close()
        except OSError as exc:
            raise BrokerError(f"cannot open {self.path} for appending: {exc.strerror or exc}") from exc

    def publish(self, batch: Sequence[Message]) -> list[str | None]:
        if self._file is None:
            raise ConnectionLost(f"{self.path} is not open")
        try:
            # One write per batch: a line is either all there or (after a crash) a torn last line.
            self._file.write(b"".join(m.payload + b"\n" for m in batch))
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise ConnectionLost(f"writing {self.path} failed: {exc.strerror or exc}") from exc
        return [None] * len(batch)

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
