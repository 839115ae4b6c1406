/* The floor of an exec-stop guard, for `cargo xtask bench`: reads the pids
 * a bpftrace one-liner stopped, one per line, and continues each at once,
 * with no policy work. Says "attached" once bpftrace has. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "Attaching", 9) == 0) {
            puts("attached");
            fflush(stdout);
            continue;
        }
        int pid = atoi(line);
        if (pid > 0)
            kill(pid, SIGCONT);
    }
    return 0;
}
