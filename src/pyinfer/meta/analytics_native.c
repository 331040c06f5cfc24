/* Native helper of pyinfer.meta.analytics (loaded with ctypes by pyinfer.meta._analytics_native).
 *
 * pyinfer_an_read: every object-detection Mtd of a buffer's GstAnalyticsRelationMeta (id order), read in one
 * call into caller-provided arrays, with what analytics.py's ctypes path reads for it: the OD's location
 * (oriented where built against GStreamer >= 1.26), its label quark (the OD's type, else the first class of
 * the related classification Mtd), the related pyinfer detection Mtd's fixed fields (raw, when it holds
 * them), the related tracking Mtd's id, and the box the reader keeps (the exact-box agreement rule, computed
 * here in double precision as Python computes it, so the results are the same bit for bit: build with
 * -ffp-contract=off). Returns the count, -1 where the buffer has no relation meta, or -2 - total where the
 * arrays hold fewer than `total` entries.
 *
 * pyinfer_an_set_tracks: a tracking Mtd (track id, first seen, last seen = pts unless GST_CLOCK_TIME_NONE) for
 * each of n OD Mtds, related `od RELATE_TO tracking`. Returns how many were added (n unless one failed).
 *
 * pyinfer_an_abi / pyinfer_an_features: the answers of pyinfer.meta._analytics_native's ABI check, and
 * whether this build reads oriented OD Mtds (analytics.py uses the helper only where that matches its own).
 *
 * Built by setup.py as an extension of the package where pkg-config knows gstreamer-analytics-1.0 (GStreamer
 * >= 1.24); no Python C API: loaded with ctypes, never imported.
 *
 * Threads: both functions are reentrant; they keep no state and write only into the arrays and the relation
 * meta they are given. Readers may read one buffer at once; tracking Mtds are added only while the buffer is
 * writable, i.e. held by one thread.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <gst/gst.h>
#include <gst/analytics/analytics.h>

#if GST_CHECK_VERSION(1, 26, 0)
#define PYINFER_ORIENTED 1
#else
#define PYINFER_ORIENTED 0
#endif

/* Bumped whenever a function's signature or meaning, or an F_* flag, changes. */
#define PYINFER_AN_ABI 1

/* flags[i] */
#define F_RECORD 1 /* a pyinfer detection Mtd with the fixed fields is related: rec[i] holds them */
#define F_TRACK 2  /* a tracking Mtd is related: track[i] is its id */
#define F_BAD 4    /* impossible values (read_detections_checked leaves the OD out) */

/* The pyinfer detection Mtd's fixed fields (analytics.DETECTION_STRUCT, "<iiiIiIII9d"). */
typedef struct {
  gint32 class_id, unique_id, model_id;
  guint32 flags;
  gint32 index;
  guint32 od_id, frames_since_update, n_topk;
  double left, top, width, height, rcx, rcy, rw, rh, angle;
} Record;

#define REC_ROTATED 1

/* The interface version, then the layout Python assumes: the pointer size, sizeof(GstAnalyticsMtd), of
 * GstAnalyticsMtdImpl (pyinfer's Mtd types are its _MtdImpl structs), of the record, and the byte order
 * (1: little-endian, as the record's). -1 past the last answer. */
gint64 pyinfer_an_abi(int what) {
  switch (what) {
  case 0:
    return PYINFER_AN_ABI;
  case 1:
    return sizeof(void *);
  case 2:
    return sizeof(GstAnalyticsMtd);
  case 3:
    return sizeof(GstAnalyticsMtdImpl);
  case 4:
    return sizeof(Record);
  case 5:
    return G_BYTE_ORDER == G_LITTLE_ENDIAN;
  default:
    return -1;
  }
}

/* 1: oriented OD Mtds are read (gst_analytics_od_mtd_get_oriented_location). */
int pyinfer_an_features(void) { return PYINFER_ORIENTED; }

/* analytics._agrees: every coordinate within a pixel (false for NaN). */
static int agrees(const double a[4], const double b[4]) {
  for (int k = 0; k < 4; k++)
    if (!(fabs(a[k] - b[k]) <= 1.0))
      return 0;
  return 1;
}

static int finite_box(const Record *r) {
  return isfinite(r->left) && isfinite(r->top) && isfinite(r->width) && isfinite(r->height) && r->width >= 0 &&
         r->height >= 0;
}

int pyinfer_an_read(GstBuffer *buf, GstAnalyticsMtdType det_type, int tracking, int cap, guint32 *ids,
                    gint32 *loc, float *rconf, guint32 *quark, Record *rec, guint64 *track, guint8 *flags,
                    double *box, double *rot) {
  GstAnalyticsRelationMeta *meta = gst_buffer_get_analytics_relation_meta(buf);
  GstAnalyticsMtdType od_type = gst_analytics_od_mtd_get_mtd_type();
  GstAnalyticsMtdType cls_type = gst_analytics_cls_mtd_get_mtd_type();
  GstAnalyticsMtdType trk_type = gst_analytics_tracking_mtd_get_mtd_type();
  gpointer state = NULL;
  GstAnalyticsMtd od;
  /* Kept across ODs, as the ctypes path's c_int/c_float outputs (a failed call leaves them). */
  gint x = 0, y = 0, w = 0, h = 0;
  gfloat r = 0.0f, conf = 0.0f;
  int total = 0;
  if (meta == NULL)
    return -1;
  while (gst_analytics_relation_meta_iterate(meta, &state, od_type, &od)) {
    int i = total++;
    if (i >= cap)
      continue;
    GstAnalyticsMtd rel, det = {0, NULL}, cls = {0, NULL}, trk = {0, NULL};
    gboolean has_det = FALSE, has_cls = FALSE, has_trk = FALSE;
    gpointer rstate = NULL;
    guint8 f = 0;
#if PYINFER_ORIENTED
    gst_analytics_od_mtd_get_oriented_location(&od, &x, &y, &w, &h, &r, &conf);
#else
    gst_analytics_od_mtd_get_location(&od, &x, &y, &w, &h, &conf);
    r = 0.0f;
#endif
    /* One pass over the OD's relations: the first related Mtd of each type, as one get_direct_related call
     * per type finds it (both walk the adjacency row in the same order). */
    while (gst_analytics_relation_meta_get_direct_related(meta, od.id, GST_ANALYTICS_REL_TYPE_RELATE_TO,
                                                          GST_ANALYTICS_MTD_TYPE_ANY, &rstate, &rel)) {
      GstAnalyticsMtdType t = gst_analytics_mtd_get_mtd_type(&rel);
      if (t == det_type && !has_det) {
        det = rel;
        has_det = TRUE;
      } else if (t == cls_type && !has_cls) {
        cls = rel;
        has_cls = TRUE;
      } else if (t == trk_type && !has_trk) {
        trk = rel;
        has_trk = TRUE;
      }
      if (has_det && has_cls && (has_trk || !tracking))
        break;
    }
    ids[i] = od.id;
    loc[4 * i] = x;
    loc[4 * i + 1] = y;
    loc[4 * i + 2] = w;
    loc[4 * i + 3] = h;
    rconf[2 * i] = r;
    rconf[2 * i + 1] = conf;
    Record *rc = &rec[i];
    if (has_det && gst_analytics_mtd_get_size(&det) >= sizeof(Record)) {
      memcpy(rc, gst_analytics_relation_meta_get_mtd_data(meta, det.id), sizeof(Record));
      f |= F_RECORD;
    }
    /* read_detections_checked's rules (analytics._problem) */
    double c = conf;
    if (!isfinite(c) || !(c >= 0.0 && c <= 1.0) || w < 0 || h < 0 || ((f & F_RECORD) && !finite_box(rc)))
      f |= F_BAD;
    GQuark q = gst_analytics_od_mtd_get_obj_type(&od);
    const gchar *s = q ? g_quark_to_string(q) : NULL;
    if ((s == NULL || *s == '\0') && has_cls && gst_analytics_cls_mtd_get_length(&cls) > 0)
      q = gst_analytics_cls_mtd_get_quark(&cls, 0);
    quark[i] = q;
    if (tracking && has_trk) {
      guint64 tid, first, last;
      gboolean lost;
      if (gst_analytics_tracking_mtd_get_info(&trk, &tid, &first, &last, &lost)) {
        track[i] = tid;
        f |= F_TRACK;
      }
    }
    /* The box (analytics._read): the OD's, or the oriented OD's enclosing box, unless the exact one agrees. */
    double *b = &box[4 * i], *ro = &rot[5 * i];
    for (int k = 0; k < 5; k++)
      ro[k] = NAN;
    double ibox[4] = {x, y, (double)x + w, (double)y + h};
    if (r != 0.0f && PYINFER_ORIENTED) {
      double cx = x + w / 2.0, cy = y + h / 2.0;
      double ca = fabs(cos((double)r)), sa = fabs(sin((double)r));
      double hw = (w * ca + h * sa) / 2, hh = (w * sa + h * ca) / 2;
      b[0] = cx - hw;
      b[1] = cy - hh;
      b[2] = cx + hw;
      b[3] = cy + hh;
      ro[0] = cx;
      ro[1] = cy;
      ro[2] = w;
      ro[3] = h;
      ro[4] = r;
    } else {
      memcpy(b, ibox, sizeof(ibox));
    }
    if (f & F_RECORD) {
      double exact[4] = {rc->left, rc->top, rc->left + rc->width, rc->top + rc->height};
      int agree;
      if ((rc->flags & REC_ROTATED) && r != 0.0f && PYINFER_ORIENTED) {
        double rbox[4] = {rc->rcx - rc->rw / 2, rc->rcy - rc->rh / 2, rc->rcx + rc->rw / 2, rc->rcy + rc->rh / 2};
        agree = agrees(rbox, ibox);
      } else {
        agree = agrees(exact, b);
      }
      if (agree) {
        memcpy(b, exact, sizeof(exact));
        if (rc->flags & REC_ROTATED) {
          ro[0] = rc->rcx;
          ro[1] = rc->rcy;
          ro[2] = rc->rw;
          ro[3] = rc->rh;
          ro[4] = rc->angle;
        }
      }
    }
    flags[i] = f;
  }
  return total > cap ? -2 - total : total;
}

int pyinfer_an_set_tracks(GstAnalyticsRelationMeta *meta, int n, const guint32 *od_ids, const guint64 *track_ids,
                          const guint64 *first_seen, guint64 pts) {
  for (int i = 0; i < n; i++) {
    GstAnalyticsTrackingMtd t;
    if (!gst_analytics_relation_meta_add_tracking_mtd(meta, track_ids[i], first_seen[i], &t))
      return i;
    if (pts != GST_CLOCK_TIME_NONE)
      gst_analytics_tracking_mtd_update_last_seen(&t, pts);
    gst_analytics_relation_meta_set_relation(meta, GST_ANALYTICS_REL_TYPE_RELATE_TO, od_ids[i], t.id);
  }
  return n;
}
