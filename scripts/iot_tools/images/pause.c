/*
 * The pod sandbox's process, like Kubernetes' pause: holds the pod's namespaces, sleeps until
 * SIGINT or SIGTERM (then exits 0) and reaps any zombie re-parented to it (it is PID 1 of the
 * pod's PID namespace when the pod shares one). Built static (gcc -static) so the image holds
 * nothing but this binary.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signo) {
    (void)signo;
    _exit(0);
}

static void on_child(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int install(int signo, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = signo == SIGCHLD ? SA_NOCLDSTOP | SA_RESTART : 0;
    return sigaction(signo, &action, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("iot-platform pause 1");
        return 0;
    }
    if (getpid() != 1) {
        /* Still useful (and testable) outside a PID namespace; say so, like upstream. */
        fputs("pause: not PID 1, zombies of other parents are not reaped\n", stderr);
    }
    if (install(SIGINT, on_stop) || install(SIGTERM, on_stop) || install(SIGCHLD, on_child)) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
