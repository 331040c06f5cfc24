/* Native helper of pyinfer.meta.roi (loaded with ctypes by pyinfer.meta._roi_native).
 *
 * pyinfer_roi_read: the detection ROI metas of a buffer (ids 0, 1, ... first meta of each id, as
 * roi.py's fast path selects them) read in one call into caller-provided arrays. Returns the count, -1
 * where any selected meta is not in pyinfer's exact representation (Python then reads the buffer through
 * its other paths), or -2 - total where the arrays hold fewer than `total` entries.
 *
 * pyinfer_roi_set_tracks: a `tracking` param (track-id guint64, predicted boolean) on each of n metas.
 *
 * pyinfer_roi_abi: the answers of pyinfer.meta._roi_native's ABI check (below), before anything else is called.
 *
 * Built by setup.py as an extension of the package (no Python C API: loaded with ctypes, never imported).
 *
 * Threads: both functions are reentrant. They keep no state between calls (the quarks are set once, under
 * g_once) and write only into the arrays and metas they are given, so streaming threads may read at once,
 * each into its own arrays (pyinfer.meta._roi_native gives each read its own). As with any GstBuffer, a
 * buffer may be read by several threads at once (tee branches), but its metas are added only while it is
 * writable, i.e. held by one thread.
 */
#include <stddef.h>
#include <string.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#define F_ROT 1
#define F_TRACK 2
#define F_PRED 4
#define F_UID 8
#define F_MODEL_BAD 16

/* Bumped whenever a function's signature or meaning, or an F_* flag, changes. */
#define PYINFER_ROI_ABI 1

static GQuark q_detection, q_tracking;

/* The interface version, then the layout that Python assumes too: the pointer size (the arrays of meta and
 * label pointers), and where GstVideoRegionOfInterestMeta keeps its fields (pyinfer.meta._roi_c reads them from
 * memory, on metas this file selects). -1 past the last answer. */
gint64 pyinfer_roi_abi(int what) {
  switch (what) {
  case 0:
    return PYINFER_ROI_ABI;
  case 1:
    return sizeof(void *);
  case 2:
    return sizeof(GstMeta);
  case 3:
    return offsetof(GstVideoRegionOfInterestMeta, id);
  case 4:
    return offsetof(GstVideoRegionOfInterestMeta, params);
  case 5:
    return sizeof(GstVideoRegionOfInterestMeta);
  default:
    return -1;
  }
}

static void init_quarks(void) {
  static gsize done = 0;
  if (g_once_init_enter(&done)) {
    q_tracking = g_quark_from_static_string("tracking");
    q_detection = g_quark_from_static_string("detection");
    g_once_init_leave(&done, 1);
  }
}

int pyinfer_roi_read(GstBuffer *buf, int cap, void **ptrs, double *box, double *rot, gint32 *cls, gint32 *uid,
                     gint32 *model, guint64 *track, guint8 *flags, const char **labels) {
  static const char *const det_fields[5] = {"left", "top", "width", "height", "confidence"};
  static const char *const rot_fields[5] = {"rotated-cx", "rotated-cy", "rotated-width", "rotated-height",
                                            "angle-rad"};
  GType api = GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE;
  gpointer state = NULL;
  GstMeta *m;
  int total = 0, n = 0;
  init_quarks();
  while ((m = gst_buffer_iterate_meta_filtered(buf, &state, api)) != NULL)
    total++;
  if (total > cap)
    return -2 - total;
  memset(ptrs, 0, sizeof(void *) * (size_t)total);
  state = NULL;
  while ((m = gst_buffer_iterate_meta_filtered(buf, &state, api)) != NULL) {
    GstVideoRegionOfInterestMeta *r = (GstVideoRegionOfInterestMeta *)m;
    if (r->id >= 0 && r->id < total && ptrs[r->id] == NULL)
      ptrs[r->id] = r;
  }
  while (n < total && ptrs[n] != NULL)
    n++;
  for (int i = 0; i < n; i++) {
    GstVideoRegionOfInterestMeta *r = ptrs[i];
    GstStructure *d = NULL, *t = NULL;
    guint8 f = 0;
    for (GList *l = r->params; l != NULL; l = l->next) {
      GstStructure *s = l->data;
      if (s == NULL)
        continue;
      GQuark q = gst_structure_get_name_id(s);
      if (q == q_detection && d == NULL)
        d = s;
      else if (q == q_tracking && t == NULL)
        t = s;
    }
    if (d == NULL)
      return -1;
    for (int k = 0; k < 5; k++)
      if (!gst_structure_get_double(d, det_fields[k], &box[5 * i + k]))
        return -1;
    if (!gst_structure_get_int(d, "class-id", &cls[i]))
      return -1;
    if (gst_structure_get_int(d, "unique-id", &uid[i]))
      f |= F_UID;
    else
      uid[i] = -1;
    if (!gst_structure_get_int(d, "model-id", &model[i])) {
      model[i] = -1;
      if (gst_structure_has_field(d, "model-id"))
        f |= F_MODEL_BAD;
    }
    if (gst_structure_has_field(d, "angle-rad")) {
      for (int k = 0; k < 5; k++)
        if (!gst_structure_get_double(d, rot_fields[k], &rot[5 * i + k]))
          return -1;
      f |= F_ROT;
    }
    labels[i] = gst_structure_get_string(d, "label");
    if (t != NULL) {
      gboolean p = FALSE;
      if (!gst_structure_get_uint64(t, "track-id", &track[i]))
        return -1;
      f |= F_TRACK;
      if (gst_structure_get_boolean(t, "predicted", &p) && p)
        f |= F_PRED;
    }
    flags[i] = f;
  }
  return n;
}

void pyinfer_roi_set_tracks(int n, GstVideoRegionOfInterestMeta **metas, const guint64 *track_ids, int predicted) {
  for (int i = 0; i < n; i++) {
    GstStructure *s = gst_structure_new("tracking", "track-id", G_TYPE_UINT64, track_ids[i], "predicted",
                                        G_TYPE_BOOLEAN, (gboolean)(predicted != 0), NULL);
    gst_video_region_of_interest_meta_add_param(metas[i], s);
  }
}
