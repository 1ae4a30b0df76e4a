/* CUDA's few built-ins that the backend's device headers (cuda_bn.cuh,
 * cuda_ops.cuh) use, stood in for in host C++, so that tests run that very
 * device code on the CPU: each CUDA thread of a block is a fiber,
 * __syncthreads a switch back to the block's scheduler, __shared__ a static
 * (one block runs at a time), the IEEE-rounded intrinsics plain operations
 * (built with -ffp-contract=off, so nothing fuses them either).
 * Include it once per test program, before the device headers.
 * What this cannot show: anything about the hardware (memory model, warps,
 * alignment faults, speed); test_cuda_ops.c on a GPU does. */
#ifndef CRESNET_TESTS_CUDA_EMULATION_H
#define CRESNET_TESTS_CUDA_EMULATION_H

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <ucontext.h>

/* ---- CUDA's built-ins, as far as cuda_bn.cuh and cuda_ops.cuh use them ---- */

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct thread_index {
    unsigned x, y, z;
};
static thread_index threadIdx, blockIdx; /* of the fiber running */
static dim3 blockDim;                    /* one launch at a time */
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline void __syncthreads();
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
#define __device__
#define __global__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)

/* ---- blocks of fibers ----
 *
 * A block's threads are fibers (ucontext) of this one thread, run in turn:
 * each runs until its next __syncthreads or its end, then the next; a round
 * ends when every thread has, so all have reached the barrier before any
 * goes past it, as on a GPU. One block at a time. */

class block_runner {
    static constexpr unsigned MAX_THREADS = 256;
    static constexpr size_t STACK_BYTES = 256 * 1024;
    struct fiber {
        ucontext_t context;
        char *stack;
        bool done;
        thread_index index;
    };
    ucontext_t scheduler_;
    fiber fibers_[MAX_THREADS];
    unsigned current_ = 0;
    bool plain_ = false; /* threads run one after another, no barrier allowed */
    const std::function<void()> *body_ = nullptr;

    static block_runner *self;
    static void fiber_main() {
        (*self->body_)();
        self->fibers_[self->current_].done = true; /* returns to scheduler_ (uc_link) */
    }

    /* getcontext "returns twice" in the compiler's eyes: kept apart from
     * the loops, whose variables it could otherwise clobber. */
    void prepare(fiber &f, unsigned t, dim3 block) {
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &scheduler_;
        makecontext(&f.context, fiber_main, 0);
        f.done = false;
        f.index = {t % block.x, t / block.x, 0};
    }
    void run_block(dim3 block, unsigned n) {
        for (unsigned t = 0; t < n; t++) prepare(fibers_[t], t, block);
        for (unsigned running = n; running > 0;) {
            running = 0;
            for (current_ = 0; current_ < n; current_++) {
                fiber &f = fibers_[current_];
                if (f.done) continue;
                threadIdx = f.index;
                swapcontext(&scheduler_, &f.context);
                running += !f.done;
            }
            /* Every kernel here has all its threads reach each barrier (an
             * early return comes after the last): a round ends with all of
             * them at the barrier or all done. */
            if (running != 0 && running != n) {
                fprintf(stderr, "threads of one block took different ways through a barrier\n");
                abort();
            }
        }
    }

  public:
    block_runner() {
        self = this;
        for (fiber &f : fibers_) f.stack = new char[STACK_BYTES];
    }
    ~block_runner() {
        for (fiber &f : fibers_) delete[] f.stack;
    }
    void sync() {
        if (plain_) {
            fprintf(stderr, "a kernel with __syncthreads launched with LAUNCH_PLAIN\n");
            abort();
        }
        swapcontext(&fibers_[current_].context, &scheduler_);
    }
    /* plain: the kernel has no __syncthreads, so its threads simply run in
     * turn (a context switch costs a system call). */
    void run(dim3 grid, dim3 block, const std::function<void()> &body, bool plain) {
        const unsigned n = block.x * block.y * block.z;
        if (n > MAX_THREADS || block.z != 1) abort();
        blockDim = block;
        body_ = &body;
        plain_ = plain;
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, 0};
                if (!plain) {
                    run_block(block, n);
                    continue;
                }
                for (unsigned t = 0; t < n; t++) {
                    threadIdx = {t % block.x, t / block.x, 0};
                    body();
                }
            }
    }
};
block_runner *block_runner::self;
static block_runner *pool;
inline void __syncthreads() { pool->sync(); }

#define LAUNCH(grid, block, call) pool->run((grid), (block), [&] { call; }, false)
#define LAUNCH_PLAIN(grid, block, call) pool->run((grid), (block), [&] { call; }, true)

#endif
