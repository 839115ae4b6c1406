/* Exec load for `cargo xtask bench`:
 *   spawner serial PROGRAM N        fork+exec+wait PROGRAM plan, N times in a row
 *   spawner burst PROGRAM N         print "ready", wait for a line on stdin, fork
 *                                   N children that exec PROGRAM plan at once,
 *                                   print "spawned", then wait for them all
 * Exits 0 only if every child exited 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t start(const char *program) {
    pid_t pid = fork();
    if (pid == 0) {
        execl(program, program, "plan", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int reap(long n) {
    int failed = 0, status;
    for (long i = 0; i < n; i++) {
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: spawner serial|burst PROGRAM N\n");
        return 2;
    }
    long n = atol(argv[3]);
    int failed = 0;
    if (strcmp(argv[1], "serial") == 0) {
        for (long i = 0; i < n; i++) {
            if (start(argv[2]) < 0)
                return 1;
            failed += reap(1);
        }
    } else {
        char go[16];
        puts("ready");
        fflush(stdout);
        if (!fgets(go, sizeof go, stdin))
            return 1;
        for (long i = 0; i < n; i++) {
            if (start(argv[2]) < 0) {
                perror("fork");
                return 1;
            }
        }
        /* stdout, not a file: a gated open would wait for a frozen guardd. */
        puts("spawned");
        fflush(stdout);
        failed = reap(n);
    }
    if (failed)
        fprintf(stderr, "%d children failed\n", failed);
    return failed != 0;
}
