/* The native core of pyinfer.track.bytetrack: ByteTracker.update / predict in one C call per frame.
 *
 * A line-by-line port of the NumPy reference (pyinfer/track/bytetrack.py, kalman.py, ops/rotated.py,
 * assignment.greedy_match): the same Kalman blocks in the same operation order, the same IoU (axis-aligned on
 * the enclosing boxes, or exact rotated IoU by Green's theorem with the same tolerances), the same greedy
 * matching (descending IoU, ties in row-major order), the same three association stages and track life cycle.
 * Thresholds on float32 scores compare in float32, as NumPy does for a float32 array against a Python float.
 * Built with -ffp-contract=off so no multiply-add is fused: the Kalman state matches NumPy's to the last bit
 * except where sin/cos differ by an ulp between libm and NumPy. tests/track/test_native.py checks the two
 * against each other frame by frame; pyinfer.track._native checks the library's ABI answers
 * (pyinfer_bt_abi) before it is used.
 *
 * No GStreamer, no Python: plain C99 and libm. Built by setup.py as an extension of the package (with
 * -ffp-contract=off) and loaded with ctypes (pyinfer/track/_native.py), never imported.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STATE_DIM 10
#define MEASURE_DIM 5
#define COV_DIM 15 /* three (value, value-velocity, velocity) blocks of five */

static const double STD_POSITION = 1.0 / 20.0;
static const double STD_VELOCITY = 1.0 / 160.0;
static const double STD_ANGLE_MEASURE = 0.05;
static const double STD_ANGLE_PROCESS = 0.02;
static const double STD_ANGLE_RATE = 0.005;
static const double MIN_SIZE = 1.0;
static const double LOW_MATCH_IOU = 0.5;
static const double TENTATIVE_MATCH_IOU = 0.3;
static const uint64_t UNTRACKED = 0xFFFFFFFFFFFFFFFFull;

/* Same layout as _native.Config (ctypes). iou_mode: 0 auto, 1 axis, 2 rotated. */
typedef struct {
    double high_threshold, low_threshold, new_track_threshold, match_iou_threshold;
    int64_t max_age, min_hits;
    int32_t class_aware, iou_mode;
} bt_config;

/* Bumped whenever a function's signature or meaning changes. */
#define PYINFER_BT_ABI 1

/* The interface version, then the layout of bt_config (its size, then each field's offset, in order): the one
 * struct Python shares with this file. -1 past the last answer. */
int64_t pyinfer_bt_abi(int32_t what) {
    static const int64_t answers[] = {
        PYINFER_BT_ABI,
        sizeof(bt_config),
        offsetof(bt_config, high_threshold),
        offsetof(bt_config, low_threshold),
        offsetof(bt_config, new_track_threshold),
        offsetof(bt_config, match_iou_threshold),
        offsetof(bt_config, max_age),
        offsetof(bt_config, min_hits),
        offsetof(bt_config, class_aware),
        offsetof(bt_config, iou_mode),
    };
    return what >= 0 && what < (int32_t)(sizeof answers / sizeof answers[0]) ? answers[what] : -1;
}

typedef struct {
    bt_config cfg;
    int64_t n, cap;
    double *mean; /* (cap, 10) */
    double *cov;  /* (cap, 15): pp[5], pv[5], vv[5] */
    uint64_t *id; /* 0 while tentative */
    int64_t *hits, *missed, *since;
    int32_t *cls;
    float *score;
    uint8_t *rot;
    uint64_t next_id;
    int64_t updates;
} bt_tracker;

/* NumPy's maximum/minimum: NaN propagates. */
static double np_max(double a, double b) { return isnan(a) ? a : (isnan(b) ? b : (a >= b ? a : b)); }
static double np_min(double a, double b) { return isnan(a) ? a : (isnan(b) ? b : (a <= b ? a : b)); }

/* -- rotated geometry (ops/rotated.py) ----------------------------------------------------------------- */

static const double UNIT_CORNERS[4][2] = {{-0.5, -0.5}, {0.5, -0.5}, {0.5, 0.5}, {-0.5, 0.5}};

static void as_box(const double *in, double *out) {
    memcpy(out, in, 5 * sizeof(double));
    if (out[2] < 0) out[2] = fabs(out[2]);
    if (out[3] < 0) out[3] = fabs(out[3]);
}

static void enclosing(const double *b, double *e) {
    double c = fabs(cos(b[4])), s = fabs(sin(b[4]));
    double ex = 0.5 * (b[2] * c + b[3] * s);
    double ey = 0.5 * (b[2] * s + b[3] * c);
    e[0] = b[0] - ex;
    e[1] = b[1] - ey;
    e[2] = b[0] + ex;
    e[3] = b[1] + ey;
}

static void corners(const double *b, double c[4][2]) {
    double co = cos(b[4]), si = sin(b[4]);
    for (int k = 0; k < 4; k++) {
        double dx = UNIT_CORNERS[k][0] * b[2], dy = UNIT_CORNERS[k][1] * b[3];
        c[k][0] = b[0] + dx * co - dy * si;
        c[k][1] = b[1] + dx * si + dy * co;
    }
}

/* Sum over the four edges c[k] + t r[k] and over closed/open of (inside length) * cross(c[k] - origin, r[k]). */
static double edge_sum(double c[4][2], const double *box, const double *origin) {
    double co = cos(box[4]), si = sin(box[4]);
    double m = np_max(np_max(fabs(box[0]), fabs(box[1])), np_max(fabs(box[2]), fabs(box[3])));
    double tol = 1e-9 * (1.0 + m);
    double total = 0.0;
    for (int k = 0; k < 4; k++) {
        const double *p = c[k], *q = c[(k + 1) & 3];
        double r[2] = {q[0] - p[0], q[1] - p[1]};
        double rel[2] = {p[0] - box[0], p[1] - box[1]};
        double start[2] = {rel[0] * co + rel[1] * si, rel[1] * co - rel[0] * si};
        double step[2] = {r[0] * co + r[1] * si, r[1] * co - r[0] * si};
        double cr = (p[0] - origin[0]) * r[1] - (p[1] - origin[1]) * r[0];
        for (int g = 0; g < 2; g++) {
            double grow = g == 0 ? tol : -tol;
            double lo = 0.0, hi = 1.0;
            for (int a = 0; a < 2; a++) {
                double half = np_max(box[2 + a] / 2 + grow, 0.0);
                double s = start[a], d = step[a];
                if (d == 0) {
                    int inside = fabs(s) <= half;
                    lo = np_max(lo, inside ? -INFINITY : INFINITY);
                    hi = np_min(hi, inside ? INFINITY : -INFINITY);
                } else {
                    double t1 = (-half - s) / d, t2 = (half - s) / d;
                    lo = np_max(lo, np_min(t1, t2));
                    hi = np_min(hi, np_max(t1, t2));
                }
            }
            total += np_max(hi - lo, 0.0) * cr;
        }
    }
    return total;
}

static double intersection(const double *a, const double *b) {
    double ca[4][2], cb[4][2];
    corners(a, ca);
    corners(b, cb);
    double total = edge_sum(ca, b, a) + edge_sum(cb, a, a);
    return fabs(0.25 * total);
}

/* (n, m) IoU of rotated boxes; pairs whose IoU is certainly below min_iou are 0 (ops/rotated.rotated_iou). */
void pyinfer_rotated_iou(int64_t n, const double *a_in, int64_t m, const double *b_in, double min_iou, double *out) {
    memset(out, 0, (size_t)(n * m) * sizeof(double));
    if (n == 0 || m == 0) return;
    double *eb = malloc((size_t)m * 9 * sizeof(double)); /* enclosing (4), box (5) */
    if (!eb) return;
    for (int64_t j = 0; j < m; j++) {
        as_box(b_in + 5 * j, eb + 9 * j + 4);
        enclosing(eb + 9 * j + 4, eb + 9 * j);
    }
    for (int64_t i = 0; i < n; i++) {
        double a[5], ea[4];
        as_box(a_in + 5 * i, a);
        enclosing(a, ea);
        double area_a = fabs(a[2] * a[3]);
        for (int64_t j = 0; j < m; j++) {
            const double *e = eb + 9 * j, *b = e + 4;
            if (!(ea[0] < e[2] && e[0] < ea[2] && ea[1] < e[3] && e[1] < ea[3])) continue;
            double area_b = fabs(b[2] * b[3]);
            if (min_iou > 0) {
                double iw = np_min(ea[2], e[2]) - np_max(ea[0], e[0]);
                double ih = np_min(ea[3], e[3]) - np_max(ea[1], e[1]);
                double bound = np_min(np_min(iw * ih, area_a), area_b);
                if (!(bound >= min_iou * (area_a + area_b - bound))) continue;
            }
            double inter = intersection(a, b);
            double uni = area_a + area_b - inter;
            out[i * m + j] = uni > 0 ? inter / uni : 0.0;
        }
    }
    free(eb);
}

/* (n, m) IoU of the axis-aligned boxes enclosing (n, 5) and (m, 5) rotated boxes (bytetrack._box_iou). */
void pyinfer_enclosing_iou(int64_t n, const double *a_in, int64_t m, const double *b_in, double *out) {
    memset(out, 0, (size_t)(n * m) * sizeof(double));
    if (n == 0 || m == 0) return;
    double *eb = malloc((size_t)m * 4 * sizeof(double));
    if (!eb) return;
    for (int64_t j = 0; j < m; j++) {
        double b[5];
        as_box(b_in + 5 * j, b);
        enclosing(b, eb + 4 * j);
    }
    for (int64_t i = 0; i < n; i++) {
        double a[5], ea[4];
        as_box(a_in + 5 * i, a);
        enclosing(a, ea);
        for (int64_t j = 0; j < m; j++) {
            const double *e = eb + 4 * j;
            if (!(ea[0] < e[2] && e[0] < ea[2] && ea[1] < e[3] && e[1] < ea[3])) continue;
            double inter = (np_min(ea[2], e[2]) - np_max(ea[0], e[0])) * (np_min(ea[3], e[3]) - np_max(ea[1], e[1]));
            double uni = (ea[2] - ea[0]) * (ea[3] - ea[1]) + (e[2] - e[0]) * (e[3] - e[1]) - inter;
            out[i * m + j] = inter / uni;
        }
    }
    free(eb);
}

/* -- greedy matching (assignment.greedy_match) --------------------------------------------------------- */

typedef struct {
    double score;
    int64_t flat;
} candidate;

static int by_score_desc(const void *pa, const void *pb) {
    const candidate *a = pa, *b = pb;
    if (a->score > b->score) return -1;
    if (a->score < b->score) return 1;
    return a->flat < b->flat ? -1 : (a->flat > b->flat);
}

/* Matches rows dets[0..nd) to columns tracks[0..nt) of the (n, T) matrix iou; appends the pairs (best first)
 * to out_d/out_t at *count. Returns 0, or -1 when out of memory. */
static int greedy(const double *iou, int64_t T, const int64_t *dets, int64_t nd, const int64_t *tracks, int64_t nt,
                  double threshold, int64_t *out_d, int64_t *out_t, int64_t *count) {
    if (nd == 0 || nt == 0) return 0;
    int64_t nc = 0, cap = 64;
    candidate *c = malloc((size_t)cap * sizeof(candidate));
    if (!c) return -1;
    for (int64_t r = 0; r < nd; r++) {
        const double *row = iou + dets[r] * T;
        for (int64_t k = 0; k < nt; k++) {
            double s = row[tracks[k]];
            if (!(s >= threshold)) continue;
            if (nc == cap) {
                candidate *g = realloc(c, (size_t)(cap *= 2) * sizeof(candidate));
                if (!g) {
                    free(c);
                    return -1;
                }
                c = g;
            }
            c[nc].score = s;
            c[nc].flat = r * nt + k;
            nc++;
        }
    }
    if (nc > 1) qsort(c, (size_t)nc, sizeof(candidate), by_score_desc);
    uint8_t *used = calloc((size_t)(nd + nt), 1);
    if (!used) {
        free(c);
        return -1;
    }
    for (int64_t q = 0; q < nc; q++) {
        int64_t r = c[q].flat / nt, k = c[q].flat % nt;
        if (used[r] || used[nd + k]) continue;
        used[r] = used[nd + k] = 1;
        out_d[*count] = dets[r];
        out_t[*count] = tracks[k];
        (*count)++;
    }
    free(used);
    free(c);
    return 0;
}

/* -- Kalman filter (kalman.py) --------------------------------------------------------------------------- */

static void scale_of(const double *v, double *scale) {
    double w = np_max(fabs(v[2]), MIN_SIZE), h = np_max(fabs(v[3]), MIN_SIZE);
    scale[0] = w;
    scale[1] = h;
    scale[2] = w;
    scale[3] = h;
    scale[4] = 1.0;
}

static void kf_initiate(const double *z, double *mean, double *cov) {
    double scale[5];
    scale_of(z, scale);
    for (int k = 0; k < MEASURE_DIM; k++) {
        mean[k] = z[k];
        mean[MEASURE_DIM + k] = 0.0;
        double sp = k == 4 ? 2 * STD_ANGLE_MEASURE : scale[k] * (2 * STD_POSITION);
        double sv = k == 4 ? 10 * STD_ANGLE_RATE : scale[k] * (10 * STD_VELOCITY);
        cov[k] = sp * sp;
        cov[5 + k] = 0.0;
        cov[10 + k] = sv * sv;
    }
}

static void kf_predict(double *mean, double *cov) {
    double scale[5];
    scale_of(mean, scale);
    for (int k = 0; k < MEASURE_DIM; k++) {
        mean[k] = mean[k] + mean[MEASURE_DIM + k];
        double pp = cov[k], pv = cov[5 + k], vv = cov[10 + k];
        double sp = k == 4 ? STD_ANGLE_PROCESS : scale[k] * STD_POSITION;
        double sv = k == 4 ? STD_ANGLE_RATE : scale[k] * STD_VELOCITY;
        cov[k] = pp + 2 * pv + vv + sp * sp;
        cov[5 + k] = pv + vv;
        cov[10 + k] = vv + sv * sv;
    }
}

static void kf_update(double *mean, double *cov, const double *z) {
    double scale[5];
    scale_of(mean, scale);
    for (int k = 0; k < MEASURE_DIM; k++) {
        double pp = cov[k], pv = cov[5 + k], vv = cov[10 + k];
        double sm = k == 4 ? STD_ANGLE_MEASURE : scale[k] * STD_POSITION;
        double s = pp + sm * sm;
        double gp = pp / s, gv = pv / s;
        double innovation = z[k] - mean[k];
        mean[k] += gp * innovation;
        mean[MEASURE_DIM + k] += gv * innovation;
        cov[k] = pp - gp * pp;
        cov[5 + k] = pv - gp * pv;
        cov[10 + k] = vv - gv * pv;
    }
}

/* -- the tracker ---------------------------------------------------------------------------------------- */

void pyinfer_bt_reset(bt_tracker *t) {
    t->n = 0;
    t->next_id = 1;
    t->updates = 0;
}

void pyinfer_bt_free(bt_tracker *t) {
    if (!t) return;
    free(t->mean);
    free(t->cov);
    free(t->id);
    free(t->hits);
    free(t->missed);
    free(t->since);
    free(t->cls);
    free(t->score);
    free(t->rot);
    free(t);
}

bt_tracker *pyinfer_bt_new(const bt_config *cfg) {
    bt_tracker *t = calloc(1, sizeof(bt_tracker));
    if (!t) return NULL;
    t->cfg = *cfg;
    pyinfer_bt_reset(t);
    return t;
}

void pyinfer_bt_configure(bt_tracker *t, const bt_config *cfg) { t->cfg = *cfg; }

int64_t pyinfer_bt_len(const bt_tracker *t) { return t->n; }

static int reserve(bt_tracker *t, int64_t need) {
    if (need <= t->cap) return 0;
    int64_t cap = t->cap ? t->cap : 64;
    while (cap < need) cap *= 2;
#define GROW(field, type, per)                                                          \
    do {                                                                               \
        type *p = realloc(t->field, (size_t)cap * (per) * sizeof(type));              \
        if (!p) return -1;                                                             \
        t->field = p;                                                                  \
    } while (0)
    GROW(mean, double, STATE_DIM);
    GROW(cov, double, COV_DIM);
    GROW(id, uint64_t, 1);
    GROW(hits, int64_t, 1);
    GROW(missed, int64_t, 1);
    GROW(since, int64_t, 1);
    GROW(cls, int32_t, 1);
    GROW(score, float, 1);
    GROW(rot, uint8_t, 1);
#undef GROW
    t->cap = cap;
    return 0;
}

static void advance(bt_tracker *t) {
    for (int64_t i = 0; i < t->n; i++) {
        kf_predict(t->mean + STATE_DIM * i, t->cov + COV_DIM * i);
        t->since[i] += 1;
    }
}

static void compact(bt_tracker *t, const uint8_t *keep) {
    int64_t w = 0;
    for (int64_t i = 0; i < t->n; i++) {
        if (!keep[i]) continue;
        if (w != i) {
            memcpy(t->mean + STATE_DIM * w, t->mean + STATE_DIM * i, STATE_DIM * sizeof(double));
            memcpy(t->cov + COV_DIM * w, t->cov + COV_DIM * i, COV_DIM * sizeof(double));
            t->id[w] = t->id[i];
            t->hits[w] = t->hits[i];
            t->missed[w] = t->missed[i];
            t->since[w] = t->since[i];
            t->cls[w] = t->cls[i];
            t->score[w] = t->score[i];
            t->rot[w] = t->rot[i];
        }
        w++;
    }
    t->n = w;
}

static void confirm(bt_tracker *t, int first) {
    for (int64_t i = 0; i < t->n; i++)
        if (t->id[i] == 0 && (t->hits[i] >= t->cfg.min_hits || first)) t->id[i] = t->next_id++;
}

/* The track's box: mean[:5] with width and height at least 0 (bytetrack._boxes). */
static void track_box(const bt_tracker *t, int64_t i, double *b) {
    memcpy(b, t->mean + STATE_DIM * i, 5 * sizeof(double));
    b[2] = np_max(b[2], 0.0);
    b[3] = np_max(b[3], 0.0);
}

/* One inferred frame: n detections (xyxy (n, 4) float32; cxcywhr (n, 5) float32 or NULL; conf; cls); writes
 * the track id of each detection (UNTRACKED for none) to out. Returns 0, or -1 when out of memory (the
 * tracker is then reset: its state would be half updated). */
int pyinfer_bt_update(bt_tracker *t, int64_t n, const float *xyxy, const float *cxcywhr, const float *conf,
                      const int32_t *cls, uint64_t *out) {
    const bt_config *c = &t->cfg;
    advance(t);
    int has_rot = cxcywhr != NULL;
    int rotated = c->iou_mode == 2 || (c->iou_mode == 0 && has_rot);
    int64_t T = t->n;
    int rc = -1;
    double *boxes = malloc((size_t)(n ? n : 1) * 5 * sizeof(double));
    double *tb = malloc((size_t)(T ? T : 1) * 5 * sizeof(double));
    double *iou = malloc((size_t)(n * T > 0 ? n * T : 1) * sizeof(double));
    int64_t *idx = malloc((size_t)(2 * n + 2 * T + 8) * sizeof(int64_t)); /* high, low, tracks; pairs */
    int64_t *md = malloc((size_t)(T + 1) * sizeof(int64_t)), *mt = malloc((size_t)(T + 1) * sizeof(int64_t));
    uint8_t *flags = malloc((size_t)(n + 2 * T + 1)); /* det free, track free, confirmed */
    if (!boxes || !tb || !iou || !idx || !md || !mt || !flags) goto done;
    for (int64_t i = 0; i < n; i++) {
        double *b = boxes + 5 * i;
        if (has_rot) {
            for (int k = 0; k < 5; k++) b[k] = (double)cxcywhr[5 * i + k];
        } else {
            double x0 = xyxy[4 * i], y0 = xyxy[4 * i + 1], x1 = xyxy[4 * i + 2], y1 = xyxy[4 * i + 3];
            b[0] = (x0 + x1) / 2;
            b[1] = (y0 + y1) / 2;
            b[2] = x1 - x0;
            b[3] = y1 - y0;
            b[4] = 0.0;
        }
    }
    for (int64_t i = 0; i < T; i++) track_box(t, i, tb + 5 * i);
    if (rotated) {
        double floor = np_min(np_min(c->match_iou_threshold, LOW_MATCH_IOU), TENTATIVE_MATCH_IOU);
        pyinfer_rotated_iou(n, boxes, T, tb, floor, iou);
    } else {
        pyinfer_enclosing_iou(n, boxes, T, tb, iou);
    }
    if (c->class_aware)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < T; j++)
                if (cls[i] != t->cls[j]) iou[i * T + j] = 0.0;

    float fh = (float)c->high_threshold, fl = (float)c->low_threshold;
    float fnew = (float)(c->new_track_threshold >= c->high_threshold ? c->new_track_threshold : c->high_threshold);
    int64_t *high = idx, *low = idx + n, *trk = idx + 2 * n;
    int64_t nh = 0, nl = 0, nt, np = 0;
    for (int64_t i = 0; i < n; i++) {
        if (conf[i] >= fh) high[nh++] = i;
        else if (conf[i] >= fl) low[nl++] = i;
    }
    uint8_t *det_free = flags, *trk_free = flags + n, *confirmed = flags + n + T;
    memset(det_free, 1, (size_t)n);
    memset(trk_free, 1, (size_t)T);
    for (int64_t j = 0; j < T; j++) confirmed[j] = t->id[j] != 0;

    /* Stage 1: strong detections against every confirmed track. */
    nt = 0;
    for (int64_t j = 0; j < T; j++)
        if (confirmed[j]) trk[nt++] = j;
    if (greedy(iou, T, high, nh, trk, nt, c->match_iou_threshold, md, mt, &np)) goto done;
    int64_t n1 = np;
    for (int64_t q = 0; q < n1; q++) trk_free[mt[q]] = 0;
    /* Stage 2: weak detections continue confirmed tracks matched at the last inferred frame. */
    nt = 0;
    for (int64_t j = 0; j < T; j++)
        if (confirmed[j] && trk_free[j] && t->missed[j] == 0) trk[nt++] = j;
    if (greedy(iou, T, low, nl, trk, nt, LOW_MATCH_IOU, md, mt, &np)) goto done;
    for (int64_t q = n1; q < np; q++) trk_free[mt[q]] = 0;
    /* Stage 3: remaining strong detections against tentative tracks. */
    for (int64_t q = 0; q < n1; q++) det_free[md[q]] = 0;
    int64_t nhl = 0;
    for (int64_t q = 0; q < nh; q++)
        if (det_free[high[q]]) high[nhl++] = high[q];
    nt = 0;
    for (int64_t j = 0; j < T; j++)
        if (!confirmed[j]) trk[nt++] = j;
    int64_t n2 = np;
    if (greedy(iou, T, high, nhl, trk, nt, TENTATIVE_MATCH_IOU, md, mt, &np)) goto done;
    for (int64_t q = n2; q < np; q++) {
        det_free[md[q]] = 0;
        trk_free[mt[q]] = 0;
    }

    for (int64_t q = 0; q < np; q++) {
        int64_t d = md[q], j = mt[q];
        double *m = t->mean + STATE_DIM * j;
        double z[5];
        memcpy(z, boxes + 5 * d, sizeof z);
        /* The representation of the detected rectangle closest in angle to the track's (_closest_representation). */
        double k = nearbyint((m[4] - z[4]) / (M_PI / 2));
        double angle = z[4] + k * (M_PI / 2);
        /* NumPy's float -> int64 cast on x86: out of range or NaN gives INT64_MIN (even); C would be undefined. */
        int64_t ki = fabs(k) < 9.2e18 ? (int64_t)k : INT64_MIN;
        if (ki % 2 != 0) {
            double w = z[2];
            z[2] = z[3];
            z[3] = w;
        }
        z[4] = angle;
        kf_update(m, t->cov + COV_DIM * j, z);
        t->hits[j] += 1;
        t->missed[j] = 0;
        t->since[j] = 0;
        t->cls[j] = cls[d];
        t->score[j] = conf[d];
        t->rot[j] = (uint8_t)has_rot;
    }
    uint8_t *keep = malloc((size_t)(T ? T : 1));
    if (!keep) goto done;
    for (int64_t j = 0; j < T; j++) {
        if (trk_free[j]) t->missed[j] += 1;
        keep[j] = !(trk_free[j] && !confirmed[j]) && t->since[j] <= c->max_age;
    }
    int first = t->updates == 0;
    t->updates += 1;
    confirm(t, first);
    for (int64_t i = 0; i < n; i++) out[i] = UNTRACKED;
    for (int64_t q = 0; q < np; q++) {
        uint64_t id = t->id[mt[q]];
        out[md[q]] = id ? id : UNTRACKED;
    }
    compact(t, keep);
    free(keep);

    int64_t start = t->n, added = 0;
    for (int64_t i = 0; i < n; i++)
        if (det_free[i] && conf[i] >= fnew) added++;
    if (added) {
        if (reserve(t, start + added)) goto done;
        int64_t w = start;
        for (int64_t i = 0; i < n; i++) {
            if (!(det_free[i] && conf[i] >= fnew)) continue;
            kf_initiate(boxes + 5 * i, t->mean + STATE_DIM * w, t->cov + COV_DIM * w);
            t->id[w] = 0;
            t->hits[w] = 1;
            t->missed[w] = 0;
            t->since[w] = 0;
            t->cls[w] = cls[i];
            t->score[w] = conf[i];
            t->rot[w] = (uint8_t)has_rot;
            w++;
        }
        t->n = w;
        confirm(t, first);
        w = start;
        for (int64_t i = 0; i < n; i++) {
            if (!(det_free[i] && conf[i] >= fnew)) continue;
            out[i] = t->id[w] ? t->id[w] : UNTRACKED;
            w++;
        }
    }
    rc = 0;
done:
    if (rc) pyinfer_bt_reset(t);
    free(boxes);
    free(tb);
    free(iou);
    free(idx);
    free(md);
    free(mt);
    free(flags);
    return rc;
}

/* A frame without inference: advance the motion model, end tracks older than max_age. Returns the number of
 * confirmed tracks matched at the last inferred frame (what pyinfer_bt_export(..., 0, ...) reports). */
int64_t pyinfer_bt_predict(bt_tracker *t) {
    advance(t);
    uint8_t *keep = malloc((size_t)(t->n ? t->n : 1));
    if (!keep) return -1;
    for (int64_t i = 0; i < t->n; i++) keep[i] = t->since[i] <= t->cfg.max_age;
    compact(t, keep);
    free(keep);
    int64_t count = 0;
    for (int64_t i = 0; i < t->n; i++) count += t->id[i] != 0 && t->missed[i] == 0;
    return count;
}

/* The tracks as detections (bytetrack._as_detections): which = 0 the confirmed tracks matched at the last
 * inferred frame, 1 every confirmed track. Boxes (k, 5) with the angle folded into [-pi/2, pi/2) and their
 * enclosing xyxy (k, 4). Returns k, or -k when k > cap (nothing written). */
int64_t pyinfer_bt_export(const bt_tracker *t, int32_t which, int64_t cap, double *boxes, double *xyxy, float *score,
                          int32_t *cls, uint64_t *id, int64_t *since, uint8_t *rot) {
    int64_t k = 0;
    for (int64_t i = 0; i < t->n; i++) k += t->id[i] != 0 && (which == 1 || t->missed[i] == 0);
    if (k > cap) return -k;
    int64_t w = 0;
    for (int64_t i = 0; i < t->n; i++) {
        if (!(t->id[i] != 0 && (which == 1 || t->missed[i] == 0))) continue;
        double *b = boxes + 5 * w;
        track_box(t, i, b);
        /* NumPy's remainder: fmod, then the sign of the divisor. */
        double x = b[4] + M_PI / 2, r = fmod(x, M_PI);
        if (r != 0) {
            if (r < 0) r += M_PI;
        } else {
            r = 0.0;
        }
        b[4] = r - M_PI / 2;
        double bb[5];
        as_box(b, bb);
        enclosing(bb, xyxy + 4 * w);
        score[w] = t->score[i];
        cls[w] = t->cls[i];
        id[w] = t->id[i];
        since[w] = t->since[i];
        rot[w] = t->rot[i];
        w++;
    }
    return k;
}

/* The whole state, for tests: mean (n, 10), cov (n, 15), id, hits, missed, since, cls, score, rot.
 * Returns n, or -n when n > cap (nothing written). */
int64_t pyinfer_bt_state(const bt_tracker *t, int64_t cap, double *mean, double *cov, uint64_t *id, int64_t *hits,
                         int64_t *missed, int64_t *since, int32_t *cls, float *score, uint8_t *rot, uint64_t *next_id) {
    if (t->n > cap) return -t->n;
    memcpy(mean, t->mean, (size_t)t->n * STATE_DIM * sizeof(double));
    memcpy(cov, t->cov, (size_t)t->n * COV_DIM * sizeof(double));
    memcpy(id, t->id, (size_t)t->n * sizeof(uint64_t));
    memcpy(hits, t->hits, (size_t)t->n * sizeof(int64_t));
    memcpy(missed, t->missed, (size_t)t->n * sizeof(int64_t));
    memcpy(since, t->since, (size_t)t->n * sizeof(int64_t));
    memcpy(cls, t->cls, (size_t)t->n * sizeof(int32_t));
    memcpy(score, t->score, (size_t)t->n * sizeof(float));
    memcpy(rot, t->rot, (size_t)t->n);
    *next_id = t->next_id;
    return t->n;
}
