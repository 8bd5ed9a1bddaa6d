/* vsockprobe CID PORT: can this process talk to a vsock listener? (trinit VM tests)
 *
 * Connects, sends an HTTP/2 client preface plus an empty SETTINGS frame (a gRPC server
 * answers with its own SETTINGS at once), and reads once. Prints one line:
 *   CID:PORT connect=<error>      the connection was not made
 *   CID:PORT closed=<eof|error>   connected, then closed by the listener without an answer
 *   CID:PORT answered=<bytes>     the listener answered (the API was reachable)
 * Static, so it runs in the busybox container without a libc. Exit status 0 unless misused.
 */
#include <errno.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                              "\0\0\0\4\0\0\0\0\0"; /* SETTINGS, no parameters */

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: vsockprobe CID PORT\n");
        return 2;
    }
    unsigned cid = (unsigned)strtoul(argv[1], NULL, 0);
    unsigned port = (unsigned)strtoul(argv[2], NULL, 0);
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("%u:%u connect=socket:%s\n", cid, port, strerror(errno));
        return 0;
    }
    struct sockaddr_vm addr;
    memset(&addr, 0, sizeof addr);
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = cid;
    addr.svm_port = port;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        printf("%u:%u connect=%s\n", cid, port, strerror(errno));
        return 0;
    }
    if (send(fd, preface, sizeof preface - 1, MSG_NOSIGNAL) < 0) {
        printf("%u:%u closed=send:%s\n", cid, port, strerror(errno));
        return 0;
    }
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0)
        printf("%u:%u answered=%zd\n", cid, port, n);
    else if (n == 0)
        printf("%u:%u closed=eof\n", cid, port);
    else
        printf("%u:%u closed=%s\n", cid, port, strerror(errno));
    return 0;
}
