"""``pymsgbroker``: publishes the messages ``pymsgconv`` attached, to a file, MQTT, Redis Streams or Kafka.

The analogue of DeepStream's ``nvmsgbroker``, but a pass-through filter rather than a sink: buffers go on
unchanged, so it can sit in the main branch (``pymsgconv ! pymsgbroker ! pyosd ! ...``) or end a branch
followed by ``fakesink``.

Example::

    gst-launch-1.0 videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=640,height=480 ! \\
        pyinfer model-engine=$(pyinfer models --path shapes) ! pymsgconv frame-interval=1 ! \\
        pymsgbroker proto=mqtt conn-str=127.0.0.1:1883 topic=detections ! fakesink

The streaming thread only queues: sending, acknowledgements and reconnects run on a worker thread
(:class:`pyinfer.brokers.Publisher`). At end of stream the element waits up to ``flush-timeout`` for the
queue to empty, then lets EOS through.
"""

from __future__ import annotations

import time

from pyinfer._gi import GObject, Gst, GstBase
from pyinfer.brokers import (
    PROTOCOLS,
    BrokerError,
    Endpoint,
    Message,
    Publisher,
    Stats,
    make_transport,
    read_config,
)
from pyinfer.elements._base import error_debug, format_exception, post_error, post_warning
from pyinfer.elements._enums import MsgbrokerDropPolicy, MsgbrokerOnConnectError, MsgbrokerProto, choice_property
from pyinfer.elements.msgconv import TEMPLATES, read_payloads
from pyinfer.errors import DependencyError

WARNING_INTERVAL_S = 5.0  # drop warnings: at most one per this many seconds

_RW = GObject.ParamFlags.READWRITE
_RO = GObject.ParamFlags.READABLE
_READY = _RW | Gst.PARAM_MUTABLE_READY


class MsgBrokerElement(GstBase.BaseTransform):
    """Queues each buffer's message payloads for a worker thread that publishes them."""

    __gtype_name__ = "PyMsgBroker"
    __gstmetadata__ = (
        "Python message broker",
        "Filter/Metadata",
        "Publishes pymsgconv's JSON messages to a file (JSON lines), MQTT, Redis Streams or Kafka",
        "pyinfer developers",
    )
    __gsttemplates__ = TEMPLATES

    proto = choice_property(
        "proto",
        type=MsgbrokerProto, default="none", nick="Protocol",
        blurb=f"Where messages go: {', '.join(PROTOCOLS)}; required (none: not set, the element does not start)",
        flags=_READY,
    )  # fmt: skip
    conn_str = GObject.Property(
        type=str, default="", nick="Connection string",
        blurb="file: the path to append JSON lines to; mqtt/redis: host:port (or host;port); kafka: host:port[,...]",
        flags=_READY,
    )  # fmt: skip
    topic = GObject.Property(
        type=str, default="pyinfer", nick="Topic", blurb="MQTT topic, Redis stream key or Kafka topic", flags=_READY
    )
    config = GObject.Property(
        type=str, default="", nick="Config file",
        blurb="INI file whose [message-broker] section holds credentials, TLS files and protocol options",
        flags=_READY,
    )  # fmt: skip
    queue_size = GObject.Property(
        type=int, default=1000, minimum=1, maximum=10_000_000, nick="Queue size",
        blurb="Most messages waiting to be published; beyond it drop-policy decides", flags=_READY,
    )  # fmt: skip
    drop_policy = choice_property(
        "drop-policy",
        type=MsgbrokerDropPolicy, default="oldest", nick="Drop policy",
        blurb="When the queue is full: oldest (drop the longest-waiting message) or newest (drop the new one)",
        flags=_READY,
    )  # fmt: skip
    on_connect_error = choice_property(
        "on-connect-error",
        type=MsgbrokerOnConnectError, default="fail", nick="On connect error",
        blurb="Broker unreachable at start: fail (ERROR, the pipeline does not start) or retry (WARNING, start "
        "anyway, queue messages and keep reconnecting)",
        flags=_READY,
    )  # fmt: skip
    connect_timeout = GObject.Property(
        type=float, default=5.0, minimum=0.1, maximum=600.0, nick="Connect timeout",
        blurb="Seconds one connection attempt may take", flags=_READY,
    )  # fmt: skip
    reconnect_interval = GObject.Property(
        type=float, default=1.0, minimum=0.01, maximum=3600.0, nick="Reconnect interval",
        blurb="Seconds before the first reconnection attempt; doubles after each failure", flags=_READY,
    )  # fmt: skip
    reconnect_max_interval = GObject.Property(
        type=float, default=30.0, minimum=0.01, maximum=3600.0, nick="Reconnect max interval",
        blurb="Longest wait between reconnection attempts, in seconds", flags=_READY,
    )  # fmt: skip
    flush_timeout = GObject.Property(
        type=float, default=5.0, minimum=0.0, maximum=3600.0, nick="Flush timeout",
        blurb="At end of stream and at stop, seconds to wait for queued messages to go out; what is left is "
        "counted as dropped",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Published", flags=_RO,
                      blurb="Messages the broker acknowledged (a message resent after a lost acknowledgement "
                      "counts again)")  # fmt: skip
    def published(self) -> int:
        return self._stats.published

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Dropped", flags=_RO,
                      blurb="Messages discarded unsent: queue full, or still queued at stop")  # fmt: skip
    def dropped(self) -> int:
        return self._stats.dropped

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Failed", flags=_RO,
                      blurb="Messages the broker refused, or given up after repeated failed sends")  # fmt: skip
    def failed(self) -> int:
        return self._stats.failed

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Reconnects", flags=_RO,
                      blurb="Connections re-established after a loss")  # fmt: skip
    def reconnects(self) -> int:
        return self._stats.reconnects

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Queued", flags=_RO,
                      blurb="Messages waiting or being sent now")  # fmt: skip
    def queued(self) -> int:
        return self._publisher.queued if self._publisher is not None else 0

    @GObject.Property(type=bool, default=False, nick="Connected", flags=_RO,
                      blurb="Whether the broker connection is up now")  # fmt: skip
    def connected(self) -> bool:
        return self._publisher is not None and self._publisher.connected

    def __init__(self) -> None:
        super().__init__()
        self.set_in_place(True)
        self.set_passthrough(True)  # reads metadata only; transform_ip still runs on every buffer
        self._publisher: Publisher | None = None
        self._where = ""  # the transport's description (proto and address), for messages to people
        self._stats = Stats()
        self._outage = False
        self._drop_warned_at = 0.0
        self._lost_reported = (0, 0)

    # -- start / stop ------------------------------------------------------------------------------
    def do_start(self) -> bool:
        # proto, drop-policy and on-connect-error are GEnums: GObject refused other values when set
        if self.proto == "none":
            post_error(self, Gst.ResourceError.SETTINGS, f"proto must be one of {', '.join(PROTOCOLS)}: it is not set")
            return False
        try:
            options = read_config(self.config) if self.config else {}
            endpoint = Endpoint(self.conn_str, self.topic, options, self.connect_timeout)
            transport = make_transport(self.proto, endpoint)
            publisher = Publisher(
                transport, queue_size=self.queue_size, drop_policy=self.drop_policy,
                reconnect_s=self.reconnect_interval, reconnect_max_s=self.reconnect_max_interval,
                on_state=self._on_state,
            )  # fmt: skip
        except DependencyError as exc:
            post_error(self, Gst.LibraryError.INIT, str(exc), error_debug(exc))
            return False
        except BrokerError as exc:
            code = Gst.ResourceError.NOT_FOUND if exc.missing else Gst.ResourceError.SETTINGS
            post_error(self, code, str(exc))
            return False
        except Exception as exc:  # a client library failing in a way we did not foresee
            post_error(self, Gst.LibraryError.INIT, f"cannot set up proto {self.proto}: {exc}", format_exception(exc))
            return False
        unused = transport.unused_options()
        if unused:  # as nvinfer config keys pyinfer cannot honour are named: never ignored silently
            post_warning(self, Gst.ResourceError.SETTINGS,
                         f"config file {self.config}: {', '.join(unused)} not used by proto {self.proto} (see "
                         "docs/messages.md for the options each protocol reads)")  # fmt: skip
        self._stats = publisher.stats
        self._where = transport.describe()
        self._outage = False
        self._drop_warned_at = 0.0
        self._lost_reported = (0, 0)
        if self.on_connect_error == "fail":
            try:
                publisher.connect_now()  # bounded by connect-timeout
            except Exception as exc:
                post_error(self, Gst.ResourceError.OPEN_WRITE, f"cannot connect to {transport.describe()}: {exc}",
                           format_exception(exc))  # fmt: skip
                return False
        # with on-connect-error=retry the worker connects, and its first failure posts a WARNING
        self._publisher = publisher
        publisher.start()
        return True

    def do_stop(self) -> bool:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop(self.flush_timeout)
        return True

    def _on_state(self, connected: bool, reason: str) -> None:
        """From the worker thread: the connection came up, or went (or stayed) down.

        Also after ``do_stop``: a worker that outlived stop (blocked in a transport call) reports here too.
        """
        if connected:
            if self._outage:
                self._outage = False
                self._post_status(True)
            return
        if self._outage:
            return  # one WARNING per outage, not one per attempt
        self._outage = True
        if self._publisher is not None:
            then = f"reconnecting, messages queue up to queue-size={self.queue_size}"
        else:
            then = "stopped: messages not yet confirmed are dropped"
        post_warning(self, Gst.ResourceError.WRITE, f"no connection to {self._where}: {reason}; {then}")
        self._post_status(False)

    def _post_status(self, connected: bool) -> None:
        s = Gst.Structure.new_empty("pymsgbroker-connection")
        s.set_value("connected", connected)
        for name in ("published", "dropped", "failed", "reconnects"):
            s.set_value(name, GObject.Value(GObject.TYPE_UINT64, getattr(self._stats, name)))
        self.post_message(Gst.Message.new_element(self, s))

    # -- data --------------------------------------------------------------------------------------
    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        try:
            publisher = self._publisher
            if publisher is None:
                return Gst.FlowReturn.OK
            try:
                payloads = read_payloads(buf)
            except ValueError as exc:
                post_warning(self, Gst.StreamError.FORMAT, f"skipped a malformed payload meta: {exc}")
                return Gst.FlowReturn.OK
            if payloads is None:
                return Gst.FlowReturn.OK
            for text in payloads.texts:
                publisher.put(Message(text.encode("utf-8"), payloads.key))
            self._report_drops()
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"queueing messages failed: {exc}", format_exception(exc))
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _report_drops(self) -> None:
        """A WARNING when messages were dropped or refused since the last one (at most one per 5 s)."""
        stats = self._stats
        lost = (stats.dropped, stats.failed)
        now = time.monotonic()
        if lost != self._lost_reported and now - self._drop_warned_at >= WARNING_INTERVAL_S:
            self._drop_warned_at = now
            self._lost_reported = lost
            post_warning(self, Gst.ResourceError.WRITE, f"{stats.dropped} message(s) dropped so far (queue full: "
                         f"queue-size={self.queue_size}, drop-policy={self.drop_policy}), {stats.failed} refused "
                         f"or given up by {self._where}")  # fmt: skip

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.EOS:
            self._flush_at_eos()
        return GstBase.BaseTransform.do_sink_event(self, event)

    def _flush_at_eos(self) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        try:
            drained = publisher.drain(self.flush_timeout)
            stats = self._stats
            if stats.lost or not drained:
                left = "" if drained else f"; {publisher.queued} still queued after {self.flush_timeout:g} s"
                post_warning(self, Gst.ResourceError.WRITE, f"{stats.lost} message(s) lost: {stats.dropped} dropped, "
                             f"{stats.failed} failed, {stats.published} published{left}")  # fmt: skip
        except Exception as exc:
            post_warning(self, Gst.ResourceError.WRITE, f"flushing messages at end of stream failed: {exc}")
