/* The cheapest relay there is, as a floor for bench/stdio.py: splice(2) from stdin (a pipe)
 * to a unix socket, blocking, no event loop, until EOF. Whatever trinit's pump costs beyond
 * this is trinit's; what this costs beyond "no relay" is the kernel's price of a third party.
 *
 * usage: minimal_relay SOCKET_PATH SNDBUF_BYTES     (prints its own CPU seconds on stdout)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SOCKET_PATH SNDBUF_BYTES\n", argv[0]);
        return 2;
    }
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }
    int sndbuf = atoi(argv[2]);
    if (setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0)
        setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    long long moved = 0;
    for (;;) {
        ssize_t n = splice(0, NULL, sock, NULL, 1 << 20, SPLICE_F_MOVE);
        if (n < 0) {
            perror("splice");
            return 1;
        }
        if (n == 0)
            break;
        moved += n;
    }
    close(sock);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("%lld %.6f\n", moved,
           usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
               usage.ru_stime.tv_usec / 1e6);
    return 0;
}
