// The reductions of a NeRV block's output maps when no block is simulated downstream (the last
// block): map(i, k) = box3(place_k(GELU(P[i, k]))), P[i, k] = conv3x3(x[i], W[k, i]) + b[k]/Cin.
//
// One thread block per kernel (i, k) of a chunk of input channels: the block computes the
// low-resolution plane GELU(P) into shared memory (and writes it out, for the sum over input
// channels), then every full-resolution pixel of the map as the mean of the placed plane's values
// in its 3×3 window, reducing them to the map's sum and absolute sum on the fly. The
// full-resolution map never exists in memory.
//
// out[m] (m = i_local·Cout + k) holds h·w plane values, then the sum, then the absolute sum.

#define XINC_SQRT1_2 0.70710678118654752440f

__device__ __forceinline__ float xinc_gelu(float v) {
    return 0.5f * v * (1.0f + erff(v * XINC_SQRT1_2));
}

__device__ __forceinline__ float xinc_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

extern "C" __global__ void box_place_sums(
    const float* __restrict__ x,           // [n, h, w]
    const float* __restrict__ weight,      // [n, Cout, 9]
    const float* __restrict__ bias_share,  // [Cout]
    float* __restrict__ out,               // [n·Cout, h·w + 2]
    int cout, int h, int w, int s)
{
    extern __shared__ float g[];           // h·w
    __shared__ float partial[2][32];
    const int m = blockIdx.x, i = m / cout, k = m % cout, hw = h * w;
    const float* xi = x + (size_t)i * hw;
    float taps[9];
#pragma unroll
    for (int t = 0; t < 9; ++t) taps[t] = weight[(size_t)m * 9 + t];
    const float b = bias_share[k];
    float* row = out + (size_t)m * (hw + 2);
    for (int p = threadIdx.x; p < hw; p += blockDim.x) {
        const int y = p / w, xx = p % w;
        float acc = 0.0f;
#pragma unroll
        for (int t = 0; t < 9; ++t) {
            const int yy = y + t / 3 - 1, xc = xx + t % 3 - 1;
            if (yy >= 0 && yy < h && xc >= 0 && xc < w) acc += taps[t] * xi[yy * w + xc];
        }
        const float v = xinc_gelu(acc + b);
        g[p] = v;
        row[p] = v;
    }
    __syncthreads();

    const int H = h * s, W = w * s, phase = k % (s * s), dy = phase / s, dx = phase % s;
    float sum = 0.0f, abs_sum = 0.0f;
    for (int q = threadIdx.x; q < H * W; q += blockDim.x) {
        const int Y = q / W, X = q % W;
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
        v *= (1.0f / 9.0f);
        sum += v;
        abs_sum += fabsf(v);
    }
    sum = xinc_warp_sum(sum);
    abs_sum = xinc_warp_sum(abs_sum);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    if (lane == 0) {
        partial[0][warp] = sum;
        partial[1][warp] = abs_sum;
    }
    __syncthreads();
    if (warp == 0) {
        sum = xinc_warp_sum(lane < warps ? partial[0][lane] : 0.0f);
        abs_sum = xinc_warp_sum(lane < warps ? partial[1][lane] : 0.0f);
        if (lane == 0) {
            row[hw] = sum;
            row[hw + 1] = abs_sum;
        }
    }
}
