// Per-pixel kernels of one MagNet refinement step (magnet-spec.md steps 3, 10 and 15).
//
// Maps are float32 planes `hw = H * W` floats apart: 1 x C x H x W or C x H x W, contiguous. Every kernel
// is a grid-stride loop, so any grid is correct; the host sizes grids to fill the GPU. The `_x4` variants
// move float4 (and uchar4 for the mask) and need hw % 4 == 0 and 16-byte aligned maps (4-byte for the
// mask); the host checks both and falls back to the scalar variant. Built without FMA contraction
// (-fmad=false), so every value equals the PyTorch twin's bit for bit. Channel loops are unrolled by
// 4 so a thread has several independent plane loads in flight instead of one latency per channel.

#define MAGNET_NEG_INF __int_as_float(0xff800000)

// Running top-2 of one pixel. A value equal to top-1 becomes top-2, so two equal leading classes give a
// margin of 0, the same values as torch.topk(2). NaN never enters (comparisons with NaN are false).
__device__ __forceinline__ void top2_push(float v, float& t1, float& t2) {
    if (v > t1) {
        t2 = t1;
        t1 = v;
    } else if (v > t2) {
        t2 = v;
    }
}

__device__ __forceinline__ void top2_push4(float4 v, float4& t1, float4& t2) {
    top2_push(v.x, t1.x, t2.x);
    top2_push(v.y, t1.y, t2.y);
    top2_push(v.z, t1.z, t2.z);
    top2_push(v.w, t1.w, t2.w);
}

__device__ __forceinline__ float4 neg_inf4() {
    return make_float4(MAGNET_NEG_INF, MAGNET_NEG_INF, MAGNET_NEG_INF, MAGNET_NEG_INF);
}

// U = 1 - (top1 - top2) over the C planes of `probs`: one read of C planes, one write of one plane.
extern "C" __global__ void uncertainty_f32(const float* __restrict__ probs, float* __restrict__ out,
                                           int channels, int hw) {
    const int stride = gridDim.x * blockDim.x;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += stride) {
        float t1 = MAGNET_NEG_INF, t2 = MAGNET_NEG_INF;
#pragma unroll 4
        for (int c = 0; c < channels; ++c) top2_push(__ldg(probs + (size_t)c * hw + p), t1, t2);
        out[p] = 1.0f - (t1 - t2);
    }
}

extern "C" __global__ void uncertainty_f32_x4(const float* __restrict__ probs, float* __restrict__ out,
                                              int channels, int hw) {
    const int hw4 = hw / 4;
    const float4* probs4 = reinterpret_cast<const float4*>(probs);
    float4* out4 = reinterpret_cast<float4*>(out);
    const int stride = gridDim.x * blockDim.x;
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < hw4; q += stride) {
        float4 t1 = neg_inf4(), t2 = neg_inf4();
#pragma unroll 4
        for (int c = 0; c < channels; ++c) top2_push4(__ldg(probs4 + (size_t)c * hw4 + q), t1, t2);
        out4[q] = make_float4(1.0f - (t1.x - t2.x), 1.0f - (t1.y - t2.y), 1.0f - (t1.z - t2.z),
                              1.0f - (t1.w - t2.w));
    }
}

// E = (top1 - top2 of `refined`) * U, and 0 where `zero_where` (H x W, uint8/bool, may be null) is set.
extern "C" __global__ void error_score_f32(const float* __restrict__ refined, const float* __restrict__ uncert,
                                           const unsigned char* __restrict__ zero_where,
                                           float* __restrict__ out, int channels, int hw) {
    const int stride = gridDim.x * blockDim.x;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += stride) {
        float t1 = MAGNET_NEG_INF, t2 = MAGNET_NEG_INF;
#pragma unroll 4
        for (int c = 0; c < channels; ++c) top2_push(__ldg(refined + (size_t)c * hw + p), t1, t2);
        float e = (t1 - t2) * __ldg(uncert + p);
        if (zero_where != nullptr && zero_where[p] != 0) e = 0.0f;
        out[p] = e;
    }
}

extern "C" __global__ void error_score_f32_x4(const float* __restrict__ refined,
                                              const float* __restrict__ uncert,
                                              const unsigned char* __restrict__ zero_where,
                                              float* __restrict__ out, int channels, int hw) {
    const int hw4 = hw / 4;
    const float4* refined4 = reinterpret_cast<const float4*>(refined);
    const float4* uncert4 = reinterpret_cast<const float4*>(uncert);
    const uchar4* zero4 = reinterpret_cast<const uchar4*>(zero_where);
    float4* out4 = reinterpret_cast<float4*>(out);
    const int stride = gridDim.x * blockDim.x;
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < hw4; q += stride) {
        float4 t1 = neg_inf4(), t2 = neg_inf4();
#pragma unroll 4
        for (int c = 0; c < channels; ++c) top2_push4(__ldg(refined4 + (size_t)c * hw4 + q), t1, t2);
        const float4 u = __ldg(uncert4 + q);
        float4 e = make_float4((t1.x - t2.x) * u.x, (t1.y - t2.y) * u.y, (t1.z - t2.z) * u.z,
                               (t1.w - t2.w) * u.w);
        if (zero4 != nullptr) {
            const uchar4 z = zero4[q];
            if (z.x != 0) e.x = 0.0f;
            if (z.y != 0) e.y = 0.0f;
            if (z.z != 0) e.z = 0.0f;
            if (z.w != 0) e.w = 0.0f;
        }
        out4[q] = e;
    }
}

// probs[c, p] = refined[c, p] for every channel c and every flat pixel p in `indices` (int64, `count`).
// Indices outside [0, hw) are skipped rather than trusted: the host cannot check them without a sync.
extern "C" __global__ void replace_points_f32(float* __restrict__ probs, const float* __restrict__ refined,
                                              const long long* __restrict__ indices, int count, int channels,
                                              int hw) {
    const int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        const long long p = indices[i];
        if (p < 0 || p >= hw) continue;
#pragma unroll 4
        for (int c = 0; c < channels; ++c) probs[(size_t)c * hw + p] = __ldg(refined + (size_t)c * hw + p);
    }
}
