"""``fakenvstreammux``: a source that pushes batched ``video/x-raw(memory:NVMM)`` buffers with fake NvDsBatchMeta.

Stands in for ``... ! nvstreammux ! nvvideoconvert ! video/x-raw(memory:NVMM),format=RGB`` on a machine without
DeepStream: each buffer is a small placeholder (the real one holds an NvBufSurface) and the batch meta with its
surfaces is registered in :mod:`nvds` under the buffer's pointer. Frames come from the synthetic scene, so the
embedded detector finds real objects in them.
"""

from __future__ import annotations

import nvds

from pyinfer._gi import GObject, Gst, GstBase

_RW = GObject.ParamFlags.READWRITE
CAPS = "video/x-raw(memory:NVMM), format=(string)RGB, width=(int)[1, 32767], height=(int)[1, 32767]"


class FakeStreamMux(GstBase.BaseSrc):
    __gtype_name__ = "PyInferFakeStreamMux"
    __gstmetadata__ = ("Fake nvstreammux", "Source/Video", "Batched NVMM buffers with fake NvDsBatchMeta", "tests")
    __gsttemplates__ = (Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS,
                                            Gst.Caps.from_string(CAPS)),)  # fmt: skip

    batch_size = GObject.Property(type=int, default=4, minimum=0, maximum=64, flags=_RW)
    num_batches = GObject.Property(type=int, default=2, minimum=0, maximum=100000, flags=_RW)
    width = GObject.Property(type=int, default=320, minimum=16, maximum=4096, flags=_RW)
    height = GObject.Property(type=int, default=240, minimum=16, maximum=4096, flags=_RW)
    seed = GObject.Property(type=int, default=3, flags=_RW)
    surface_format = GObject.Property(type=str, default="RGB", flags=_RW)  # what the surfaces really hold
    pool_size = GObject.Property(type=int, default=1024, minimum=0, maximum=100000, flags=_RW)
    ds_major = GObject.Property(type=int, default=9, minimum=6, maximum=20, flags=_RW)
    attach_meta = GObject.Property(type=bool, default=True, flags=_RW)

    def __init__(self) -> None:
        super().__init__()
        self.set_format(Gst.Format.TIME)
        self._made = 0
        self._scene = None

    def do_start(self) -> bool:
        from pyinfer.scene import Scene

        self._made = 0
        self._scene = Scene(self.seed, self.width, self.height)
        return True

    def do_get_caps(self, filt: Gst.Caps | None) -> Gst.Caps:
        caps = Gst.Caps.from_string(
            f"video/x-raw(memory:NVMM), format=RGB, width={self.width}, height={self.height}, framerate=30/1"
        )
        return caps.intersect(filt) if filt is not None else caps

    def do_fixate(self, caps: Gst.Caps) -> Gst.Caps:
        return caps.fixate()

    def do_create(self, offset: int, size: int, buf: Gst.Buffer | None = None):
        if self._made >= self.num_batches:
            return (Gst.FlowReturn.EOS, None)
        n = self.batch_size
        first = self._made * n
        frames = [self._scene.frame(first + i)[0] for i in range(n)]
        out = Gst.Buffer.new_allocate(None, 64, None)  # stands for the NvBufSurface the real buffer maps to
        out.pts = self._made * 33_333_333
        out.duration = 33_333_333
        bm = nvds.make_batch(frames, color_format=self.surface_format, pool_size=self.pool_size,
                             ds_major=self.ds_major, first_frame_number=self._made, pts=out.pts)  # fmt: skip
        if self.attach_meta:
            nvds.register(out, bm)
        self._made += 1
        return (Gst.FlowReturn.OK, out)


def register() -> None:
    if Gst.ElementFactory.find("fakenvstreammux") is None:
        GObject.type_register(FakeStreamMux)
        Gst.Element.register(None, "fakenvstreammux", Gst.Rank.NONE, FakeStreamMux)
