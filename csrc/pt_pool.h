/* pt_pool.h - a small persistent team of worker threads for short parallel loops: the GEMMs, the
 * AVX2/AVX-512 attention, the AVX2 norms (pt_parallel_ranges in pt_common.h) and the output
 * screen's passes.
 *
 * Why not OpenMP for these: a batch-1 decode step of the opus-mt-size model runs about 50
 * parallel loops back to back (36 GEMVs, 12 attention calls, the screen). pytransformer loads
 * libgomp with sleeping workers (OMP_WAIT_POLICY=PASSIVE, see pytransformer/__init__.py), so every
 * one of those regions first wakes a sleeping thread (~15 us for an empty region on the
 * development machine); with spinning workers libgomp spins a fixed
 * count however busy the machine is, which made decoding several times slower when another
 * process wanted the cores. This team spins a short, bounded time after each loop (long enough to
 * catch the next loop of a decode step) and stops spinning when it sees that the scheduler
 * preempted a worker in mid-spin, i.e. when the cores are contended. OpenMP regions that still
 * exist (softmax and activations on large inputs, the portable kernels) first tell the team to sleep
 * (pt_pool_park). Linux only (futex); elsewhere pt_pool_run declines and callers use OpenMP. */
#ifndef PT_POOL_H
#define PT_POOL_H

typedef void (*pt_pool_task_fn)(void *ctx, int task);

/* Runs fn(ctx, t) exactly once for every t in [0, ntasks), on the calling thread and up to
 * nthreads - 1 workers that take tasks as they finish the previous one, and returns 1 when all
 * have finished. Returns 0 without running any task when the pool is not used for this call: one
 * thread or task, more than 65535 tasks, disabled (PYTRANSFORMER_THREAD_POOL=0), another thread is
 * running a loop on it, called from inside an OpenMP parallel region or from a worker, a worker
 * could not be started, or not Linux. The caller then runs the loop its own way. */
int pt_pool_run(pt_pool_task_fn fn, void *ctx, int ntasks, int nthreads);

/* Tells spinning workers to sleep now: called before every OpenMP parallel region, whose own
 * threads would otherwise share the cores with a spinning worker. */
void pt_pool_park(void);

/* 1 when pt_pool_run may run loops in this build and process (Linux, not disabled). */
int pt_pool_available(void);

/* Use the pool (1) or let every caller use OpenMP (0); for side-by-side measurements and tests.
 * Workers already started stay asleep while it is off. */
void pt_pool_set_enabled(int on);

/* Workers started so far (they live until the process exits; none after fork in the child). */
int pt_pool_workers(void);

/* Loops run on the pool, and times a worker stopped spinning for a while because it had been
 * preempted twice within 50 ms (process-wide, cumulative): for tests and diagnostics. */
long long pt_pool_loops(void);
long long pt_pool_backoffs(void);

#endif
