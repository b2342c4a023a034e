// Top-k selection over N float32 values (magnet-spec.md step 13), for any 1 <= k < N, selecting exactly
// the set of ops/topk.py::topk_lowest_index: the k largest values, ties at the k-th value broken by the
// lowest flat index. Output: the selected flat indices as int64, in ascending index order.
//
// Launch sequence on one stream, all with TOPK_THREADS threads per block and a zeroed workspace:
//   topk_histogram pass 0, 1, 2   radix select on order-preserving uint32 keys, digits of 11, 11 and 10
//                                 bits; the last block of each pass picks the digit holding the k-th key
//   topk_count                    per tile of TOPK_TILE values: how many keys are above / equal to the
//                                 k-th; its last block turns those counts into exclusive prefix sums
//   topk_compact                  writes every index above the k-th and the first `need` equal ones, at
//                                 its rank among the selected, so the output is sorted by index
// No host round trip between launches: the decisions live in the workspace.

#define TOPK_THREADS 256
#define TOPK_ITEMS 16
#define TOPK_TILE (TOPK_THREADS * TOPK_ITEMS)
#define TOPK_BINS 2048
#define TOPK_PASSES 3
#define TOPK_HIST_UNROLL 4

// Workspace layout, in uint32 words (the host allocates it zeroed; keep launcher.py in step).
#define WS_HIST 0                                  // TOPK_PASSES x TOPK_BINS histograms
#define WS_STATE (TOPK_PASSES * TOPK_BINS)         // the selection state below
#define WS_STATE_WORDS 16
#define WS_TILES (WS_STATE + WS_STATE_WORDS)       // 4 x num_tiles: gt, eq, gt offset, eq offset
#define ST_PREFIX 0  // key bits decided so far (the k-th key once every pass ran)
#define ST_MASK 1    // which key bits are decided
#define ST_NEED 2    // how many keys equal to the prefix (under the mask) are still to be taken
#define ST_DONE 3    // 1 when the chosen bucket is taken whole: later passes have nothing to decide
#define ST_TICKET 4  // 4 + pass: blocks finished, for the last-block pattern; 4 + TOPK_PASSES: topk_count

#define FULL_WARP 0xffffffffu
#define NO_BIN 0xffffffffu

// Order-preserving float -> uint32 key, larger float = larger key. -0.0 is made +0.0 and every NaN the
// largest key, because torch.sort (the twin) treats -0.0 == 0.0 and sorts NaN above everything.
__device__ __forceinline__ unsigned topk_key(float f) {
    unsigned u = __float_as_uint(f);
    if (f == 0.0f) u = 0u;
    if (f != f) return 0xffffffffu;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ int pass_shift(int pass) { return pass == 0 ? 21 : (pass == 1 ? 10 : 0); }

__device__ __forceinline__ int pass_bins(int pass) { return pass == TOPK_PASSES - 1 ? 1024 : 2048; }

// Exclusive prefix sum of `v` over the block, in thread order; `*total` gets the block's sum. Every
// thread of the block must call it. `s_warp` holds one T per warp.
template <typename T>
__device__ __forceinline__ T block_exclusive_scan(T v, T* s_warp, T* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    T x = v;
    for (int offset = 1; offset < 32; offset <<= 1) {
        const T y = __shfl_up_sync(FULL_WARP, x, offset);
        if (lane >= offset) x += y;
    }
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    T before = 0, sum = 0;
    for (int w = 0; w < nwarps; ++w) {
        const T t = s_warp[w];
        if (w < warp) before += t;
        sum += t;
    }
    __syncthreads();  // s_warp is free again for the next call
    *total = sum;
    return before + x - v;
}

// True in every thread of the last block of the grid to get here. Call after this block's global writes.
__device__ __forceinline__ bool last_block_done(unsigned* ticket, int* s_flag) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) *s_flag = atomicAdd(ticket, 1u) == gridDim.x - 1u ? 1 : 0;
    __syncthreads();
    const bool last = *s_flag != 0;
    if (last) __threadfence();
    return last;
}

// One radix pass: histogram of the pass's digit over the keys that match the digits decided so far.
// Any grid size; TOPK_THREADS threads.
extern "C" __global__ void topk_histogram(const float* __restrict__ values, int n, unsigned* ws, int pass,
                                          int k) {
    __shared__ unsigned s_hist[TOPK_BINS];
    __shared__ unsigned s_warp[TOPK_THREADS / 32];
    __shared__ int s_last;
    unsigned* state = ws + WS_STATE;
    if (pass > 0 && __ldcg(state + ST_DONE) != 0u) return;  // the same for the whole block
    const int shift = pass_shift(pass), nbins = pass_bins(pass);
    const unsigned mask = pass == 0 ? 0u : __ldcg(state + ST_MASK);
    const unsigned prefix = pass == 0 ? 0u : __ldcg(state + ST_PREFIX);
    for (int b = threadIdx.x; b < nbins; b += blockDim.x) s_hist[b] = 0u;
    __syncthreads();

    // Warps walk chunks of 32 x UNROLL consecutive values, so a warp's lanes agree on the trip count and
    // all take part in __match_any_sync. Lanes with the same bin add once per warp: with the smoothed
    // map's ties, and with values in [0, 1] sharing a handful of top-11-bit digits, plain shared atomics
    // would serialise on a few addresses.
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    const long long chunk = 32 * TOPK_HIST_UNROLL;
    for (long long base = ((long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * chunk; base < n;
         base += warps * chunk) {
        unsigned bin[TOPK_HIST_UNROLL];
#pragma unroll
        for (int u = 0; u < TOPK_HIST_UNROLL; ++u) {
            const long long i = base + u * 32 + lane;
            bin[u] = NO_BIN;
            if (i < n) {
                const unsigned key = topk_key(__ldg(values + i));
                if ((key & mask) == prefix) bin[u] = (key >> shift) & (unsigned)(nbins - 1);
            }
        }
#pragma unroll
        for (int u = 0; u < TOPK_HIST_UNROLL; ++u) {
            const unsigned peers = __match_any_sync(FULL_WARP, bin[u]);
            if (bin[u] != NO_BIN && lane == __ffs(peers) - 1) atomicAdd(&s_hist[bin[u]], (unsigned)__popc(peers));
        }
    }
    __syncthreads();
    unsigned* g_hist = ws + WS_HIST + pass * TOPK_BINS;
    for (int b = threadIdx.x; b < nbins; b += blockDim.x) {
        if (s_hist[b] != 0u) atomicAdd(g_hist + b, s_hist[b]);
    }
    if (!last_block_done(state + ST_TICKET + pass, &s_last)) return;

    // The last block finds the digit of the k-th largest key: walking bins from the top, the one where
    // the running count reaches `need`. Thread t sums its slice of the descending bins, a block scan
    // places the slices, and the one thread whose slice holds `need` walks it.
    const int per_thread = nbins / TOPK_THREADS;
    const unsigned need = pass == 0 ? (unsigned)k : __ldcg(state + ST_NEED);
    unsigned local = 0u;
    for (int j = 0; j < per_thread; ++j) local += __ldcg(g_hist + (nbins - 1 - (threadIdx.x * per_thread + j)));
    unsigned total;
    const unsigned before = block_exclusive_scan(local, s_warp, &total);
    if (before < need && need <= before + local) {
        unsigned acc = before;
        for (int j = 0; j < per_thread; ++j) {
            const unsigned b = (unsigned)(nbins - 1 - (threadIdx.x * per_thread + j));
            const unsigned count = __ldcg(g_hist + b);
            if (acc + count >= need) {
                state[ST_PREFIX] = prefix | (b << shift);
                state[ST_MASK] = mask | ((unsigned)(nbins - 1) << shift);
                state[ST_NEED] = need - acc;
                state[ST_DONE] = need - acc == count ? 1u : 0u;
                break;
            }
            acc += count;
        }
    }
}

// Per tile: keys above and equal to the k-th (under the decided mask). Grid = num_tiles.
extern "C" __global__ void topk_count(const float* __restrict__ values, int n, unsigned* ws, int num_tiles) {
    __shared__ unsigned s_warp[TOPK_THREADS / 32];
    __shared__ unsigned long long s_warp64[TOPK_THREADS / 32];
    __shared__ int s_last;
    unsigned* state = ws + WS_STATE;
    unsigned* tiles = ws + WS_TILES;
    const unsigned prefix = __ldcg(state + ST_PREFIX), mask = __ldcg(state + ST_MASK);
    const long long tile0 = (long long)blockIdx.x * TOPK_TILE;
    unsigned packed = 0u;  // above << 16 | equal; a tile has at most 4096 of each
    for (int r = 0; r < TOPK_ITEMS; ++r) {
        const long long i = tile0 + r * TOPK_THREADS + threadIdx.x;
        if (i < n) {
            const unsigned key = topk_key(__ldg(values + i)) & mask;
            packed += key > prefix ? (1u << 16) : (key == prefix ? 1u : 0u);
        }
    }
    unsigned tile_total;
    block_exclusive_scan(packed, s_warp, &tile_total);
    if (threadIdx.x == 0) {
        tiles[blockIdx.x] = tile_total >> 16;
        tiles[num_tiles + blockIdx.x] = tile_total & 0xffffu;
    }
    if (!last_block_done(state + ST_TICKET + TOPK_PASSES, &s_last)) return;

    // Exclusive prefix sums over tiles, both counts at once in 64 bits (totals reach N).
    unsigned long long carry = 0ull;
    for (int base = 0; base < num_tiles; base += TOPK_THREADS) {
        const int t = base + threadIdx.x;
        unsigned long long v = 0ull;
        if (t < num_tiles) v = ((unsigned long long)__ldcg(tiles + t) << 32) | __ldcg(tiles + num_tiles + t);
        unsigned long long chunk_total;
        const unsigned long long before = carry + block_exclusive_scan(v, s_warp64, &chunk_total);
        if (t < num_tiles) {
            tiles[2 * num_tiles + t] = (unsigned)(before >> 32);
            tiles[3 * num_tiles + t] = (unsigned)(before & 0xffffffffull);
        }
        carry += chunk_total;
    }
}

// Writes the k selected indices in ascending order. Grid = num_tiles; tiles with nothing selected exit.
extern "C" __global__ void topk_compact(const float* __restrict__ values, int n, const unsigned* ws,
                                        int num_tiles, long long* __restrict__ out) {
    __shared__ unsigned s_warp[2][TOPK_THREADS / 32];
    const unsigned* state = ws + WS_STATE;
    const unsigned* tiles = ws + WS_TILES;
    const unsigned prefix = __ldcg(state + ST_PREFIX), mask = __ldcg(state + ST_MASK);
    const unsigned need = __ldcg(state + ST_NEED);
    const unsigned gt_count = __ldcg(tiles + blockIdx.x), eq_count = __ldcg(tiles + num_tiles + blockIdx.x);
    const unsigned gt_base = __ldcg(tiles + 2 * num_tiles + blockIdx.x);
    const unsigned eq_base = __ldcg(tiles + 3 * num_tiles + blockIdx.x);
    if (gt_count == 0u && (eq_count == 0u || eq_base >= need)) return;  // the same for the whole block

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const unsigned lanes_below = (1u << lane) - 1u;
    const long long tile0 = (long long)blockIdx.x * TOPK_TILE;
    unsigned carry_gt = 0u, carry_eq = 0u;
    for (int r = 0; r < TOPK_ITEMS; ++r) {
        const long long i = tile0 + r * TOPK_THREADS + threadIdx.x;
        bool is_gt = false, is_eq = false;
        if (i < n) {
            const unsigned key = topk_key(__ldg(values + i)) & mask;
            is_gt = key > prefix;
            is_eq = key == prefix;
        }
        const unsigned gt_lanes = __ballot_sync(FULL_WARP, is_gt), eq_lanes = __ballot_sync(FULL_WARP, is_eq);
        // Per-warp counts of this round, double-buffered by round so one barrier per round suffices.
        if (lane == 0) s_warp[r & 1][warp] = ((unsigned)__popc(gt_lanes) << 16) | (unsigned)__popc(eq_lanes);
        __syncthreads();
        unsigned before = 0u, round_total = 0u;
        for (int w = 0; w < nwarps; ++w) {
            const unsigned t = s_warp[r & 1][w];
            if (w < warp) before += t;
            round_total += t;
        }
        // Rank among the selected = keys above before me + min(equal keys before me, need).
        const unsigned gt_before = gt_base + carry_gt + (before >> 16) + __popc(gt_lanes & lanes_below);
        const unsigned eq_before = eq_base + carry_eq + (before & 0xffffu) + __popc(eq_lanes & lanes_below);
        if (is_gt) {
            out[gt_before + min(eq_before, need)] = i;
        } else if (is_eq && eq_before < need) {
            out[gt_before + eq_before] = i;
        }
        carry_gt += round_total >> 16;
        carry_eq += round_total & 0xffffu;
    }
}
