/* The API-client gate benchmark's TLS peers, both on OpenSSL.
 *   tls_writes serve PORTFILE CERT KEY STAMP: listens on a free loopback port (written
 *     to PORTFILE), reads and discards each connection; the CLOCK_MONOTONIC ns at which
 *     a connection's first bytes arrived is written to STAMP.
 *   tls_writes write PORT MODE N: N SSL_write calls of 1 KiB; prints us per write.
 *     MODE raw: bytes that are no request; get: each write a whole GET request head
 *     (let through in the kernel in a session); post: a POST request head with an
 *     empty body (stopped, judged and let go in a session); delete: one DELETE.
 *   tls_writes start: prints the us its first SSL_new took (in a session, the process
 *     stops there until guardd follows it with the write probes). */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SIZE 1024

static unsigned long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull + t.tv_nsec;
}

/* A request head of exactly SIZE bytes, padded in a header. */
static void request(char *buf, const char *method) {
    const char *fmt = "%s /bench HTTP/1.1\r\nHost: 127.0.0.1\r\n%sX-Pad: ";
    const char *length = strcmp(method, "GET") ? "Content-Length: 0\r\n" : "";
    int at = snprintf(buf, SIZE, fmt, method, length);
    memset(buf + at, 'p', SIZE - at - 4);
    memcpy(buf + SIZE - 4, "\r\n\r\n", 4);
}

static int serve(const char *port_file, const char *cert, const char *key, const char *stamp) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return 2;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 16) ||
        getsockname(listener, (struct sockaddr *)&addr, &len))
        return 3;
    FILE *out = fopen(port_file, "w");
    fprintf(out, "%d\n", ntohs(addr.sin_port));
    fclose(out);
    char buf[65536];
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            int first = 1;
            while (SSL_read(ssl, buf, sizeof buf) > 0) {
                if (first) {
                    FILE *s = fopen(stamp, "w");
                    fprintf(s, "%llu\n", now_ns());
                    fclose(s);
                    first = 0;
                }
            }
        }
        SSL_free(ssl);
        close(fd);
    }
}

static int write_loop(int port, const char *mode, long n) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr))
        return 2;
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1)
        return 3;
    char buf[SIZE];
    if (!strcmp(mode, "raw"))
        memset(buf, 'x', SIZE);
    else if (!strcmp(mode, "get"))
        request(buf, "GET");
    else if (!strcmp(mode, "post"))
        request(buf, "POST");
    else
        request(buf, "DELETE");
    unsigned long long start = now_ns();
    for (long i = 0; i < n; i++)
        if (SSL_write(ssl, buf, SIZE) != SIZE)
            return 4;
    printf("%.4f\n", (now_ns() - start) / 1000.0 / n);
    SSL_shutdown(ssl);
    return 0;
}

static int first_start(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    unsigned long long start = now_ns();
    SSL *ssl = SSL_new(ctx);
    printf("%.4f\n", (now_ns() - start) / 1000.0);
    SSL_free(ssl);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "start"))
        return first_start();
    if (argc == 6 && !strcmp(argv[1], "serve"))
        return serve(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 5 && !strcmp(argv[1], "write"))
        return write_loop(atoi(argv[2]), argv[3], atol(argv[4]));
    fprintf(stderr, "usage: tls_writes serve PORTFILE CERT KEY STAMP | write PORT MODE N | start\n");
    return 1;
}
