// The reductions of a NeRV block's output maps (spec A.8-A.11), without the full-resolution maps.
//
// Kernel (i, k)'s map is a chain on its low-resolution conv plane P = conv3x3(x[i], W[k, i]) + b[k]/Cin:
//   L0 = GELU(P)                              [h, w]
//   L1 = GELU(box3(place_k(L0)))              [h·s, w·s]      (if a block is simulated downstream)
//   Ld = GELU(box3(up2(L(d-1))))              [2×, 2×]        (each further downstream block)
//   map = box3(place_k(L0)) if nothing is downstream, else box3(up2(L_D)).
// place_k puts a plane on PixelShuffle phase k % s² of a plane s times larger (zeros elsewhere),
// box3 is the 3×3 mean with zero padding, up2 the nearest ×2 upsampling.
//
// One thread block per (output channel k, group of input channels): for each input channel of its
// group, the block builds the chain's planes in shared memory, reduces the map's pixels to their
// sum and absolute sum on the fly (the map itself is never written), and adds the last plane L_D
// into its group's accumulator, from which the sum over input channels is expanded afterwards.
//
// sums[(i·Cout + k)·2 + {0, 1}] = the map's sum and absolute sum;
// acc[(group·Cout + k)·|L_D| + q] = Σ over the group's input channels of L_D[q].

#define XINC_SQRT1_2 0.70710678118654752440f

__device__ __forceinline__ float xinc_gelu(float v) {
    return 0.5f * v * (1.0f + erff(v * XINC_SQRT1_2));
}

__device__ __forceinline__ float xinc_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

// box3(place(g)) at full-resolution pixel (Y, X); g is [h, w], the placed plane [h·s, w·s].
__device__ __forceinline__ float xinc_box_place(const float* g, int h, int w, int s, int dy, int dx,
                                                int Y, int X) {
    const int H = h * s, W = w * s;
    float v = 0.0f;
    for (int yy = Y - 1; yy <= Y + 1; ++yy) {
        const int ry = yy - dy;
        if (yy < 0 || yy >= H || ry < 0 || ry % s != 0) continue;
        const float* gr = g + (ry / s) * w;
        for (int xc = X - 1; xc <= X + 1; ++xc) {
            const int rx = xc - dx;
            if (xc < 0 || xc >= W || rx < 0 || rx % s != 0) continue;
            v += gr[rx / s];
        }
    }
    return v * (1.0f / 9.0f);
}

// box3(up2(g)) at pixel (Y, X); g is [h, w], the upsampled plane [2h, 2w].
__device__ __forceinline__ float xinc_box_up2(const float* g, int h, int w, int Y, int X) {
    const int H = 2 * h, W = 2 * w;
    float v = 0.0f;
    for (int yy = max(Y - 1, 0); yy <= min(Y + 1, H - 1); ++yy) {
        const float* gr = g + (yy >> 1) * w;
        for (int xc = max(X - 1, 0); xc <= min(X + 1, W - 1); ++xc) v += gr[xc >> 1];
    }
    return v * (1.0f / 9.0f);
}

extern "C" __global__ void nerv_block_sums(
    const float* __restrict__ x,           // [Cin, h, w]
    const float* __restrict__ weight,      // [Cin, Cout, 9]
    const float* __restrict__ bias_share,  // [Cout]
    float* __restrict__ sums,              // [Cin, Cout, 2]
    float* __restrict__ acc,               // [groups, Cout, |L_D|], zeroed
    int cin, int cout, int h, int w, int s, int downstream, int per_group)
{
    extern __shared__ float planes[];      // L0, L1, …, L_D one after the other
    __shared__ float partial[2][32];
    const int k = blockIdx.x, group = blockIdx.y;
    const int i0 = group * per_group, i1 = min(cin, i0 + per_group);
    const int phase = k % (s * s), dy = phase / s, dx = phase % s;

    // The last plane's size and place in shared memory.
    int lh = h, lw = w, last = 0;
    for (int d = 1; d <= downstream; ++d) {
        last += lh * lw;
        const int f = d == 1 ? s : 2;
        lh *= f;
        lw *= f;
    }
    float* acck = acc + ((size_t)group * cout + k) * lh * lw;
    const int fh = downstream == 0 ? h * s : 2 * lh, fw = downstream == 0 ? w * s : 2 * lw;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;

    for (int i = i0; i < i1; ++i) {
        const float* xi = x + (size_t)i * h * w;
        const float* wk = weight + ((size_t)i * cout + k) * 9;
        const float b = bias_share[k];
        for (int p = threadIdx.x; p < h * w; p += blockDim.x) {
            const int y = p / w, xx = p % w;
            float a = 0.0f;
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                const int yy = y + t / 3 - 1, xc = xx + t % 3 - 1;
                if (yy >= 0 && yy < h && xc >= 0 && xc < w) a += wk[t] * xi[yy * w + xc];
            }
            planes[p] = xinc_gelu(a + b);
        }
        __syncthreads();
        int ph = h, pw = w, at = 0;
        for (int d = 1; d <= downstream; ++d) {
            const float* prev = planes + at;
            float* next = planes + at + ph * pw;
            const int f = d == 1 ? s : 2, nh = ph * f, nw = pw * f;
            for (int q = threadIdx.x; q < nh * nw; q += blockDim.x) {
                const int Y = q / nw, X = q % nw;
                const float v = d == 1 ? xinc_box_place(prev, ph, pw, s, dy, dx, Y, X)
                                       : xinc_box_up2(prev, ph, pw, Y, X);
                next[q] = xinc_gelu(v);
            }
            __syncthreads();
            at += ph * pw;
            ph = nh;
            pw = nw;
        }
        const float* lp = planes + last;
        for (int q = threadIdx.x; q < lh * lw; q += blockDim.x) acck[q] += lp[q];

        float sum = 0.0f, abs_sum = 0.0f;
        for (int q = threadIdx.x; q < fh * fw; q += blockDim.x) {
            const int Y = q / fw, X = q % fw;
            const float v = downstream == 0 ? xinc_box_place(lp, lh, lw, s, dy, dx, Y, X)
                                            : xinc_box_up2(lp, lh, lw, Y, X);
            sum += v;
            abs_sum += fabsf(v);
        }
        sum = xinc_warp_sum(sum);
        abs_sum = xinc_warp_sum(abs_sum);
        if (lane == 0) {
            partial[0][warp] = sum;
            partial[1][warp] = abs_sum;
        }
        __syncthreads();
        if (warp == 0) {
            sum = xinc_warp_sum(lane < warps ? partial[0][lane] : 0.0f);
            abs_sum = xinc_warp_sum(lane < warps ? partial[1][lane] : 0.0f);
            if (lane == 0) {
                sums[((size_t)i * cout + k) * 2] = sum;
                sums[((size_t)i * cout + k) * 2 + 1] = abs_sum;
            }
        }
        __syncthreads();
    }
}
