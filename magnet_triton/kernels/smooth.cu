// Smoothing of the error map (magnet-spec.md step 11): nearest down-resize to the network input size,
// k x k median with zero padding, nearest up-resize back.
//
// The down-resize and the median are one kernel: a 16 x 16 tile of median outputs first gathers its
// (16 + k - 1)^2 window values straight from the full-size map through the nearest index maps, so the
// small map is never written before filtering. A second variant computes the error score itself at
// those gathered pixels (E = margin(refined) * U, masked), so the full-size E is never materialised:
// at 2048x1024 -> 256x128 it reads 1/64 of the refined planes. The up-resize is a separate, trivially
// memory-bound kernel because many output pixels share one median.
//
// Nearest semantics equal ops/resize.py::nearest_source_indices: src = min(floor(dst * (in / out)),
// in - 1) with the ratio and the product rounded to float32 (explicit _rn intrinsics, no contraction);
// out == in is the identity and out == 2 * in is dst >> 1.

#define SMOOTH_TILE 16
#define MAGNET_NEG_INF __int_as_float(0xff800000)

struct NearestAxis {
    int in_len;
    int out_len;
    float scale;

    __device__ __forceinline__ NearestAxis(int in, int out)
        : in_len(in), out_len(out), scale(__fdiv_rn((float)in, (float)out)) {}

    __device__ __forceinline__ int source(int dst) const {
        if (out_len == in_len) return dst;
        if (out_len == 2 * in_len) return dst >> 1;
        const int src = (int)floorf(__fmul_rn((float)dst, scale));
        return min(src, in_len - 1);
    }
};

// Bijective, order-preserving float -> uint32 map (negative floats reversed), so that a median found on
// keys is the bit pattern of one of the window's values. -0.0 sorts just below +0.0: both are zero, so
// the median value is the same as torch.median's.
__device__ __forceinline__ unsigned float_to_key(float f) {
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float key_to_float(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// An H x W error map already in memory.
struct MapSource {
    const float* map;
    int width;

    __device__ __forceinline__ float operator()(int y, int x) const {
        return __ldg(map + (size_t)y * width + x);
    }
};

// The error score computed on the fly at one pixel: (top1 - top2 of refined) * U, 0 where masked.
// Same operations as refine.cu::error_score_f32, so the same bits.
struct ErrorScoreSource {
    const float* refined;
    const float* uncert;
    const unsigned char* zero_where;
    int channels;
    int width;
    int hw;

    __device__ __forceinline__ float operator()(int y, int x) const {
        const int p = y * width + x;
        if (zero_where != nullptr && zero_where[p] != 0) return 0.0f;
        float t1 = MAGNET_NEG_INF, t2 = MAGNET_NEG_INF;
        for (int c = 0; c < channels; ++c) {
            const float v = __ldg(refined + (size_t)c * hw + p);
            if (v > t1) {
                t2 = t1;
                t1 = v;
            } else if (v > t2) {
                t2 = v;
            }
        }
        return (t1 - t2) * __ldg(uncert + p);
    }
};

// Block (16, 16), grid (ceil(sw / 16), ceil(sh / 16)), dynamic shared memory (16 + k - 1)^2 * 4 bytes.
template <class Source>
__device__ __forceinline__ void down_median(const Source& src, int in_h, int in_w, float* __restrict__ small,
                                            int sh, int sw, int kernel) {
    extern __shared__ unsigned s_keys[];
    const int radius = kernel / 2;
    const int span = SMOOTH_TILE + 2 * radius;
    const int ty0 = blockIdx.y * SMOOTH_TILE, tx0 = blockIdx.x * SMOOTH_TILE;
    const NearestAxis rows(in_h, sh), cols(in_w, sw);
    const int tid = threadIdx.y * SMOOTH_TILE + threadIdx.x;
    for (int i = tid; i < span * span; i += SMOOTH_TILE * SMOOTH_TILE) {
        const int yy = ty0 - radius + i / span, xx = tx0 - radius + i % span;
        float v = 0.0f;  // the median filter pads with zeros, outside the small map
        if (yy >= 0 && yy < sh && xx >= 0 && xx < sw) v = src(rows.source(yy), cols.source(xx));
        s_keys[i] = float_to_key(v);
    }
    __syncthreads();
    const int oy = ty0 + threadIdx.y, ox = tx0 + threadIdx.x;
    if (oy >= sh || ox >= sw) return;
    // The median is the key m with #{keys < m} <= rank < #{keys <= m}: build it bit by bit, keeping a
    // bit when at most `rank` keys lie below the trial value. 32 counting sweeps of the window, no
    // per-thread array (a k = 11 window would spill to local memory) and no data-dependent branches.
    const unsigned rank = (unsigned)(kernel * kernel) / 2u;
    const unsigned* window = s_keys + threadIdx.y * span + threadIdx.x;
    unsigned median = 0u;
    for (int bit = 31; bit >= 0; --bit) {
        const unsigned trial = median | (1u << bit);
        unsigned below = 0u;
        for (int dy = 0; dy < kernel; ++dy) {
            const unsigned* row = window + dy * span;
            for (int dx = 0; dx < kernel; ++dx) below += row[dx] < trial ? 1u : 0u;
        }
        if (below <= rank) median = trial;
    }
    small[(size_t)oy * sw + ox] = key_to_float(median);
}

// `score` (in_h x in_w) -> nearest to sh x sw -> k x k median -> `small` (sh x sw).
extern "C" __global__ void down_median_f32(const float* __restrict__ score, int in_h, int in_w,
                                           float* __restrict__ small, int sh, int sw, int kernel) {
    const MapSource src = {score, in_w};
    down_median(src, in_h, in_w, small, sh, sw, kernel);
}

// As down_median_f32, with the error score of `refined` (C x in_h x in_w), `uncert` (in_h x in_w) and
// `zero_where` (in_h x in_w uint8, may be null) computed only at the pixels the down-resize reads.
extern "C" __global__ void error_down_median_f32(const float* __restrict__ refined,
                                                 const float* __restrict__ uncert,
                                                 const unsigned char* __restrict__ zero_where, int channels,
                                                 int in_h, int in_w, float* __restrict__ small, int sh,
                                                 int sw, int kernel) {
    const ErrorScoreSource src = {refined, uncert, zero_where, channels, in_w, in_h * in_w};
    down_median(src, in_h, in_w, small, sh, sw, kernel);
}

// `small` (sh x sw) -> nearest -> `out` (out_h x out_w). Grid (x blocks over columns, y over rows).
extern "C" __global__ void upsample_nearest_f32(const float* __restrict__ small, int sh, int sw,
                                                float* __restrict__ out, int out_h, int out_w) {
    const NearestAxis rows(sh, out_h), cols(sw, out_w);
    for (int y = blockIdx.y; y < out_h; y += gridDim.y) {
        const float* src_row = small + (size_t)rows.source(y) * sw;
        float* dst_row = out + (size_t)y * out_w;
        for (int x = blockIdx.x * blockDim.x + threadIdx.x; x < out_w; x += gridDim.x * blockDim.x) {
            dst_row[x] = __ldg(src_row + cols.source(x));
        }
    }
}
