/* Unlinks DIR/f0 .. DIR/f(N-1) and prints the microseconds per unlink
 * (CLOCK_MONOTONIC around the loop only). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: unlinks DIR N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    char path[4096];
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/f%d", argv[1], i);
        if (unlink(path) != 0) {
            perror(path);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("%.3f\n", ns / 1e3 / n);
    return 0;
}
