/* The floor of one fresh process per task on a machine: fork a child that writes one byte
 * and exits, read the byte, reap the child; N times in a row. Run two at once to see what two
 * cores reach, and under `perf stat -e task-clock` for the CPU it costs.
 *
 *     gcc -O2 -o /tmp/fork-floor bench/fork-floor.c && /tmp/fork-floor 2000
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    int p[2];
    if (pipe(p) != 0) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c = 1;
            exit(write(p[1], &c, 1) == 1 ? 0 : 1);
        }
        char c;
        if (read(p[0], &c, 1) != 1) return 1;
        int status;
        waitpid(pid, &status, 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n;
    printf("%.1f us per fork, exit and wait\n", us);
    return 0;
}
