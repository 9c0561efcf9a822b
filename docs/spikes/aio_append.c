/*
 * Spike (not part of the build): what a durable append costs the thread that asks for it.
 *
 * Appends 300 bytes N times, after an idle gap each, into a file of zeros written and synced
 * beforehand (as the log's preallocated segments are), two ways:
 *
 *   A  pwrite + fdatasync, as the log's writer thread does today;
 *   B  Linux AIO (io_submit) of the 4 KiB block holding the record, the file opened with
 *      O_DIRECT | O_DSYNC, completion signalled on an eventfd that the thread then reads.
 *
 * For each it prints the latency and the calling thread's context switches per append
 * (getrusage RUSAGE_THREAD, voluntary + involuntary, around the append only). Mode "A", "B"
 * or "AB" (default). docs/benchmarks.md has the runs; docs/design/storage.md what they mean.
 *
 *   gcc -O2 -o /tmp/aio_append docs/spikes/aio_append.c
 *   /tmp/aio_append DIR COUNT GAP_MICROSECONDS [A|B|AB]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define RECORD 300

static long switches(void)
{
    struct rusage r;
    getrusage(RUSAGE_THREAD, &r);
    return r.ru_nvcsw + r.ru_nivcsw;
}

static double micros(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void idle(int us)
{
    struct timespec t = {0, us * 1000L};
    nanosleep(&t, NULL);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *lat, int n, long sw, long in_submit)
{
    qsort(lat, n, sizeof *lat, by_value);
    printf("%s: %d appends, p50 %.0f us p90 %.0f us; %.2f switches of the calling thread per append",
           what, n, lat[n / 2], lat[n * 9 / 10], (double)sw / n);
    if (in_submit >= 0)
        printf(" (%.2f inside io_submit)", (double)in_submit / n);
    printf("\n");
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR COUNT GAP_MICROSECONDS [A|B|AB]\n", argv[0]);
        return 2;
    }
    const char *mode = argc > 4 ? argv[4] : "AB";
    int n = atoi(argv[2]), gap = atoi(argv[3]);
    char path[4096];
    snprintf(path, sizeof path, "%s/aio_append.spike", argv[1]);

    void *buf;
    if (posix_memalign(&buf, BLOCK, BLOCK))
        return 1;
    memset(buf, 0, BLOCK);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    long blocks = (long)n * RECORD / BLOCK + 2;
    for (long i = 0; i < blocks; i++)
        if (pwrite(fd, buf, BLOCK, i * BLOCK) != BLOCK)
            return 1;
    fsync(fd);
    close(fd);
    double *lat = malloc(sizeof(double) * n);

    if (strchr(mode, 'A')) {
        fd = open(path, O_RDWR);
        long sw = 0;
        for (int i = 0; i < n; i++) {
            memset(buf, i & 255, RECORD);
            idle(gap);
            long s = switches();
            double t = micros();
            if (pwrite(fd, buf, RECORD, (off_t)i * RECORD) != RECORD || fdatasync(fd))
                return 1;
            lat[i] = micros() - t;
            sw += switches() - s;
        }
        report("A pwrite + fdatasync", lat, n, sw, -1);
        close(fd);
    }

    if (strchr(mode, 'B')) {
        fd = open(path, O_RDWR | O_DIRECT | O_DSYNC);
        int efd = eventfd(0, 0);
        aio_context_t ctx = 0;
        if (fd < 0 || efd < 0 || syscall(SYS_io_setup, 8, &ctx)) {
            perror("O_DIRECT file, eventfd or io_setup");
            return 1;
        }
        long sw = 0, in_submit = 0;
        for (int i = 0; i < n; i++) {
            /* The record goes into the block that holds it; the block is rewritten whole. */
            long off = (long)i * RECORD;
            if (i > 0 && off / BLOCK != (off - RECORD) / BLOCK)
                memset(buf, 0, BLOCK); /* a new block: only this record's bytes in it */
            memset((char *)buf + off % BLOCK, i & 255, RECORD < BLOCK - off % BLOCK ? RECORD : BLOCK - off % BLOCK);
            idle(gap);
            struct iocb cb;
            memset(&cb, 0, sizeof cb);
            cb.aio_fildes = fd;
            cb.aio_lio_opcode = IOCB_CMD_PWRITE;
            cb.aio_buf = (uint64_t)(uintptr_t)buf;
            cb.aio_nbytes = BLOCK;
            cb.aio_offset = off / BLOCK * BLOCK;
            cb.aio_flags = IOCB_FLAG_RESFD;
            cb.aio_resfd = efd;
            struct iocb *cbs[1] = {&cb};
            long s = switches();
            double t = micros();
            if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) {
                perror("io_submit");
                return 1;
            }
            in_submit += switches() - s;
            uint64_t done;
            struct io_event ev;
            if (read(efd, &done, sizeof done) != sizeof done ||
                syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1 || (long)ev.res != BLOCK) {
                fprintf(stderr, "append %d failed\n", i);
                return 1;
            }
            lat[i] = micros() - t;
            sw += switches() - s;
        }
        report("B AIO, O_DIRECT | O_DSYNC", lat, n, sw, in_submit);
    }
    unlink(path);
    return 0;
}
