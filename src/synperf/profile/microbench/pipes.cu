// Pipe throughput microbenchmarks: the measured peaks behind GPU spec values that no datasheet
// gives (mma.sync on Hopper, the special-function unit, L2 read bandwidth, launch floor).
// Build: nvcc -O3 -gencode=arch=compute_90a,code=sm_90a pipes.cu -o pipes   (any sm_80+ target works)
// Prints one JSON object. Each rate is the best of several timed launches after a warm-up.
#include <cstdio>
#include <cuda_runtime.h>
#include <cuda_bf16.h>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
  fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); return 1; } } while (0)

// 8 independent m16n8k16 bf16 MMAs per iteration hide the MMA latency.
__global__ void mma_sync_bf16(int iters, float* sink) {
  unsigned a[4] = {0x3f803f80u ^ threadIdx.x, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u};
  unsigned b[2] = {0x3f803f80u, 0x3f803f80u ^ blockIdx.x};
  float acc[8][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                   "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                   : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
  }
  float s = 0.f;
  for (int j = 0; j < 8; ++j) s += acc[j][0] + acc[j][1] + acc[j][2] + acc[j][3];
  if (s == 12345.f) sink[threadIdx.x] = s;
}

__global__ void ex2_approx(int iters, float* sink) {
  float v[8];
  for (int j = 0; j < 8; ++j) v[j] = -1e-3f * (threadIdx.x + j);
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(v[j]));
  }
  float s = 0.f;
  for (int j = 0; j < 8; ++j) s += v[j];
  if (s == 12345.f) sink[threadIdx.x] = s;
}

__global__ void ffma(int iters, float* sink) {
  float v[8];
  for (int j = 0; j < 8; ++j) v[j] = 1e-3f * (threadIdx.x + j);
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) asm volatile("fma.rn.f32 %0, %0, 0f3F7FFFFF, 0f3A000000;" : "+f"(v[j]));
  }
  float s = 0.f;
  for (int j = 0; j < 8; ++j) s += v[j];
  if (s == 12345.f) sink[threadIdx.x] = s;
}

// Every CTA streams the same L2-resident buffer with L1-bypassing 16-byte loads.
__global__ void l2_read(const int4* buf, size_t n, int passes, int* sink) {
  int acc = 0;
  for (int p = 0; p < passes; ++p)
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
      int4 v = __ldcg(buf + ((i + p * 977) % n));
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  if (acc == 0x7fffffff) sink[0] = acc;
}

__global__ void empty_kernel() {}

template <typename F>
float best_ms(F launch, int reps) {
  cudaEvent_t s, e; cudaEventCreate(&s); cudaEventCreate(&e);
  launch();  // warm-up
  cudaDeviceSynchronize();
  float best = 1e30f;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(s); launch(); cudaEventRecord(e); cudaEventSynchronize(e);
    float ms; cudaEventElapsedTime(&ms, s, e); if (ms < best) best = ms;
  }
  return best;
}

int main() {
  cudaDeviceProp prop; CHECK(cudaGetDeviceProperties(&prop, 0));
  int sms = prop.multiProcessorCount;
  float* sink; CHECK(cudaMalloc(&sink, 4096 * sizeof(float)));
  const int iters = 4096, threads = 128, blocks = sms * 8;
  float t = best_ms([&] { mma_sync_bf16<<<blocks, threads>>>(iters, sink); }, 5);
  CHECK(cudaGetLastError());
  double mma_flops = 2.0 * 16 * 8 * 16 * 8 * (double)iters * (threads / 32) * blocks;
  float tx = best_ms([&] { ex2_approx<<<blocks, threads * 2>>>(iters, sink); }, 5);
  double ex2_ops = 8.0 * iters * threads * 2 * blocks;
  float tf = best_ms([&] { ffma<<<blocks, threads * 2>>>(iters * 4, sink); }, 5);
  double fma_ops = 8.0 * iters * 4 * threads * 2 * blocks;
  size_t l2_bytes = 16u << 20;  // well inside a 50 MB L2
  int4* buf; CHECK(cudaMalloc(&buf, l2_bytes)); CHECK(cudaMemset(buf, 1, l2_bytes));
  int passes = 20;
  float tl = best_ms([&] { l2_read<<<sms * 4, 512>>>(buf, l2_bytes / 16, passes, (int*)sink); }, 5);
  CHECK(cudaGetLastError());
  float te = best_ms([&] { empty_kernel<<<1, 32>>>(); }, 50);
  // clock during the measurement: the SM clock the peaks are reached at
  int clock_khz = 0; cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  printf("{\"gpu\": \"%s\", \"sm_count\": %d, \"attr_clock_mhz\": %.0f,\n", prop.name, sms, clock_khz / 1e3);
  printf(" \"mma_sync_bf16_tflops\": %.1f, \"ex2_gops\": %.1f, \"ffma_gops\": %.1f, \"l2_read_gb_s\": %.0f,\n",
         mma_flops / t / 1e9, ex2_ops / tx / 1e6, fma_ops / tf / 1e6, (double)l2_bytes * passes / tl / 1e6);
  printf(" \"empty_kernel_event_us\": %.2f}\n", te * 1e3);
  return 0;
}
