/* Two threads of one process make their calls at the same moment, each on
 * its own TLS connection to 127.0.0.1:PORT: a POST the policy lets through
 * and a DELETE it holds. Letting the POST go must not let the DELETE go.
 * usage: two_threads PORT PATH; prints each thread's first response line. */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_barrier_t start;

struct call {
    SSL *ssl;
    char request[256];
    char answer[64];
};

static SSL *connect_tls(SSL_CTX *ctx, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr))
        exit(2);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1)
        exit(3);
    return ssl;
}

static void *run(void *arg) {
    struct call *call = arg;
    pthread_barrier_wait(&start);
    int len = strlen(call->request);
    if (SSL_write(call->ssl, call->request, len) != len) {
        strcpy(call->answer, "write failed");
        return NULL;
    }
    int got = SSL_read(call->ssl, call->answer, sizeof call->answer - 1);
    call->answer[got > 0 ? got : 0] = 0;
    char *end = strpbrk(call->answer, "\r\n");
    if (end)
        *end = 0;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 1;
    int port = atoi(argv[1]);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    struct call post = {.ssl = connect_tls(ctx, port)}, del = {.ssl = connect_tls(ctx, port)};
    snprintf(post.request, sizeof post.request,
             "POST /twothreads-post HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    snprintf(del.request, sizeof del.request,
             "DELETE %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", argv[2]);
    pthread_barrier_init(&start, NULL, 2);
    pthread_t a, b;
    pthread_create(&a, NULL, run, &post);
    pthread_create(&b, NULL, run, &del);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("post: %s\ndelete: %s\n", post.answer, del.answer);
    return 0;
}
