/* The program the exec benchmarks run: exits at once, or with an argument
 * appends CLOCK_MONOTONIC in ns to that file as its first action. */
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc > 2) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        FILE *out = fopen(argv[2], "a");
        if (out) {
            fprintf(out, "%lld\n", (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
            fclose(out);
        }
    }
    return 0;
}
