/* A load generator in C for the 10,000-client benchmark (issue 17).
 *
 * The same job and stdin/stdout protocol as benchmarks/loadgen.py for what
 * benchmarks/scale.py uses, for healthy clients only: connect --clients sockets to
 * 127.0.0.1:--port, upgrade each by hand, print {"event": "connected"}, wait for "go",
 * read every connection in one epoll loop until "stop" (or until the server has closed
 * every connection), print {"event": "result", ...} and exit. The Python generator
 * costs most of a core at 10,000 clients; this one leaves that core to the hub.
 *
 * Records are those of benchmarks/payload.py: `--size` bytes each, joined by newlines
 * in a frame, the sequence number in bytes 5-15 and the publish time
 * (CLOCK_MONOTONIC ns, which is Python's time.monotonic_ns()) in bytes 20-39.
 * Anything that is not such a frame from a server exits with an error on stderr
 * (status 1), so a broken server is never mistaken for a slow one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define RECV_SIZE (1 << 18)       /* one read per ready socket, as loadgen.py's _RECV */
#define MAX_FRAME (64u << 20)     /* a longer frame is garbage, not a batch of records */
#define MIN_SIZE 47               /* payload.py's MIN_SIZE */
#define SEQ_AT 5
#define SEQ_LEN 10
#define STAMP_AT 20
#define STAMP_LEN 19
#define CONTROL UINT32_MAX        /* the epoll tag of stdin */

typedef struct {
    int fd;
    int closed;                   /* the server sent a close frame or closed the socket */
    uint8_t *buf;                 /* bytes of a frame not complete yet */
    size_t len, cap;
    uint64_t records, frames, nbytes, out_of_order;
    int64_t last_seq;
} Client;

static Client *clients;
static long nclients;
static long size;
static int64_t *latencies;
static size_t nlat, latcap;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen.c: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *grow(void *p, size_t bytes) {
    p = realloc(p, bytes);
    if (!p) die("out of memory (%zu bytes)", bytes);
    return p;
}

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Up to 80 bytes of what a server sent, printable, for an error message. */
static const char *shown(const uint8_t *p, size_t n) {
    static char out[4 * 80 + 1];
    size_t o = 0;
    for (size_t i = 0; i < n && i < 80; i++)
        o += (size_t)sprintf(out + o, p[i] >= 32 && p[i] < 127 && p[i] != '\\' ? "%c" : "\\x%02x",
                             p[i]);
    out[o] = 0;
    return out;
}

static int64_t digits(const uint8_t *p, int n, long client, const char *field) {
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            die("client %ld: %s of a record is not %d digits: \"%s\"", client, field, n,
                shown(p, (size_t)n));
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* Count one data frame's records: their order and their latency at `now`. */
static void records_of(Client *c, long index, const uint8_t *p, size_t n, int64_t now) {
    size_t size1 = (size_t)size + 1;
    if ((n + 1) % size1 != 0)
        die("client %ld: a frame of %zu bytes is not records of --size %ld joined by newlines: "
            "\"%s\"",
            index, n, size, shown(p, n));
    size_t records = (n + 1) / size1;
    c->frames++;
    c->records += records;
    if (nlat + records > latcap) {
        latcap = latcap ? 2 * latcap + records : 1 << 20;
        latencies = grow(latencies, latcap * sizeof *latencies);
    }
    for (size_t r = 0; r < records; r++) {
        const uint8_t *rec = p + r * size1;
        if (r + 1 < records && rec[size] != '\n')
            die("client %ld: records in a frame are not separated by newlines", index);
        int64_t seq = digits(rec + SEQ_AT, SEQ_LEN, index, "the sequence number");
        int64_t stamp = digits(rec + STAMP_AT, STAMP_LEN, index, "the publish time");
        if (seq <= c->last_seq) c->out_of_order++;
        c->last_seq = seq;
        latencies[nlat++] = now - stamp;
    }
}

/* Parse what arrived on one connection, as loadgen.py's feed(): every complete frame
 * in `p`, the rest kept in the client's buffer. `p` may be the client's own buffer. */
static void feed(Client *c, long index, const uint8_t *p, size_t n, int64_t now) {
    size_t pos = 0;
    while (!c->closed && n - pos >= 2) {
        uint8_t first = p[pos], second = p[pos + 1];
        uint8_t opcode = first & 0x0F;
        if (first & 0x70)
            die("client %ld: reserved bits set in a frame (no extension was negotiated): \"%s\"",
                index, shown(p + pos, n - pos));
        if (second & 0x80)
            die("client %ld: a masked frame (a server must not mask): \"%s\"", index,
                shown(p + pos, n - pos));
        if (opcode == 0x0 || !(first & 0x80))
            die("client %ld: a fragmented message (the hub sends whole frames): \"%s\"", index,
                shown(p + pos, n - pos));
        if ((opcode > 0x2 && opcode < 0x8) || opcode > 0xA)
            die("client %ld: unknown opcode 0x%x: \"%s\"", index, opcode, shown(p + pos, n - pos));
        uint64_t length = second & 0x7F;
        size_t header = 2;
        if (length >= 126) {
            header = length == 126 ? 4 : 10;
            if (n - pos < header) break;
            length = 0;
            for (size_t i = 2; i < header; i++) length = length << 8 | p[pos + i];
        }
        if (length > MAX_FRAME)
            die("client %ld: a frame of %llu bytes (more than %u MiB): \"%s\"", index,
                (unsigned long long)length, MAX_FRAME >> 20, shown(p + pos, n - pos));
        if (n - pos - header < length) break;
        const uint8_t *payload = p + pos + header;
        pos += header + (size_t)length;
        if (opcode == 0x8)
            c->closed = 1; /* what follows a close frame is not read, as in feed() */
        else if (opcode <= 0x2)
            records_of(c, index, payload, (size_t)length, now);
        /* ping and pong are ignored: the benchmark's server sends none */
    }
    size_t rest = c->closed ? 0 : n - pos;
    if (rest > c->cap) {
        c->cap = rest > 4096 ? rest : 4096;
        uint8_t *fresh = grow(NULL, c->cap);
        memcpy(fresh, p + pos, rest);
        free(c->buf);
        c->buf = fresh;
    } else if (rest) {
        memmove(c->buf, p + pos, rest);
    }
    c->len = rest;
}

/* Append new bytes to what a client kept, then parse; parse in place if it kept none. */
static void arrived(Client *c, long index, const uint8_t *data, size_t n, int64_t now) {
    c->nbytes += n;
    if (c->len == 0) {
        feed(c, index, data, n, now);
        return;
    }
    if (c->len + n > c->cap) {
        c->cap = 2 * (c->len + n);
        c->buf = grow(c->buf, c->cap);
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
    feed(c, index, c->buf, c->len, now);
}

static void send_all(int fd, const char *p, size_t n, long index) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("client %ld: sending the handshake: %s", index, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Connect and upgrade as loadgen.py's handshake() does; keep bytes read past the
 * response in the client's buffer. */
static void handshake(Client *c, long index, int port) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("client %ld: socket(): %s", index, strerror(errno));
    struct timeval timeout = {.tv_sec = 30};  /* a silent server is an error, not a hang */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("client %ld: connect to 127.0.0.1:%d: %s", index, port, strerror(errno));

    uint8_t raw[18] = {0};  /* 16 random bytes, base64 in 24 characters ("==" at the end) */
    if (getrandom(raw, 16, 0) != 16) die("getrandom: %s", strerror(errno));
    char key[25];
    for (int i = 0; i < 6; i++) {
        uint32_t v = (uint32_t)raw[3 * i] << 16 | (uint32_t)raw[3 * i + 1] << 8 | raw[3 * i + 2];
        for (int j = 0; j < 4; j++) key[4 * i + j] = b64[(v >> (18 - 6 * j)) & 63];
    }
    key[22] = key[23] = '=';
    key[24] = 0;
    char request[256];
    int n = snprintf(request, sizeof request,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     port, key);
    send_all(fd, request, (size_t)n, index);

    uint8_t response[8192];
    size_t got = 0;
    uint8_t *end = NULL;
    while (!end) {
        if (got == sizeof response)
            die("client %ld: handshake response longer than %zu bytes: \"%s\"", index, got,
                shown(response, got));
        ssize_t r = recv(fd, response + got, sizeof response - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            die("client %ld: no handshake response within %ld s: \"%s\"", index,
                (long)timeout.tv_sec, shown(response, got));
        if (r < 0) die("client %ld: handshake: %s", index, strerror(errno));
        if (r == 0)
            die("client %ld: handshake: connection closed: \"%s\"", index, shown(response, got));
        got += (size_t)r;
        end = memmem(response, got, "\r\n\r\n", 4);
    }
    size_t head = (size_t)(end - response);
    if (head < 12 || memcmp(response, "HTTP/1.1 101", 12) != 0)
        die("client %ld: handshake refused: \"%s\"", index, shown(response, head));
    if (memmem(response, head, "permessage-deflate", 18))
        die("client %ld: the server negotiated permessage-deflate, never offered", index);
    struct timeval none = {0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    c->fd = fd;
    c->last_seq = -1;
    c->len = c->cap = got - head - 4;
    if (c->len) {
        c->buf = grow(NULL, c->cap);
        memcpy(c->buf, end + 4, c->len);
    }
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A latency quantile in ms as loadgen.py's pick(), or null without records. */
static void print_pick(const char *name, double q, const char *sep) {
    if (!nlat) {
        printf("\"%s\": null%s", name, sep);
        return;
    }
    size_t i = (size_t)(q * (double)nlat);
    if (i > nlat - 1) i = nlat - 1;
    printf("\"%s\": %.6f%s", name, (double)latencies[i] / 1e6, sep);
}

static double rusage_s(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

static void print_result(double cpu, double wall, double user, double system) {
    uint64_t records = 0, frames = 0, nbytes = 0, disorder = 0, closed = 0;
    uint64_t rmin = nclients ? UINT64_MAX : 0, rmax = 0;
    for (long i = 0; i < nclients; i++) {
        Client *c = &clients[i];
        records += c->records;
        frames += c->frames;
        nbytes += c->nbytes;
        disorder += c->out_of_order;
        closed += (uint64_t)c->closed;
        if (c->records < rmin) rmin = c->records;
        if (c->records > rmax) rmax = c->records;
    }
    qsort(latencies, nlat, sizeof *latencies, compare);
    /* The fields of loadgen.py's result; those of the kinds this one refuses are zero. */
    printf("{\"event\": \"result\", \"loadgen\": \"c\", \"healthy\": %ld, \"stalled\": 0, "
           "\"negotiated\": 0, \"records\": %llu, \"records_min\": %llu, \"records_max\": %llu, "
           "\"frames\": %llu, \"wire_bytes\": %llu, \"out_of_order\": %llu, \"closed\": %llu, "
           "\"churn_joins\": 0, \"slow\": 0, \"slow_records\": 0, \"slow_out_of_order\": 0, "
           "\"slow_closed\": 0, \"stale_records\": [], \"resumed_caught_up\": 0, "
           "\"resumed_closed\": 0, \"latency_ms\": {",
           nclients, (unsigned long long)records, (unsigned long long)rmin,
           (unsigned long long)rmax, (unsigned long long)frames, (unsigned long long)nbytes,
           (unsigned long long)disorder, (unsigned long long)closed);
    print_pick("p50", 0.50, ", ");
    print_pick("p99", 0.99, ", ");
    print_pick("max", 1.0, "");
    printf("}, \"cpu_s\": %.6f, \"wall_s\": %.6f, \"user_s\": %.6f, \"system_s\": %.6f}\n", cpu,
           wall, user, system);
    fflush(stdout);
}

/* Append what stdin has to `control` (its last bytes only, when full: a word may
 * straddle two reads); return what read() returned. */
static ssize_t read_control(char *control, size_t *len, size_t cap) {
    if (*len + 16 >= cap) {
        memmove(control, control + *len - 8, 8);
        *len = 8;
    }
    ssize_t r;
    do r = read(0, control + *len, cap - 1 - *len);
    while (r < 0 && errno == EINTR);
    if (r > 0) *len += (size_t)r;
    control[*len] = 0;
    return r;
}

/* Read stdin until `control` holds `word`; 0 at the end of input. */
static int wait_for(char *control, size_t *len, size_t cap, const char *word) {
    while (!strstr(control, word))
        if (read_control(control, len, cap) <= 0) return 0;
    return 1;
}

static long number(const char *name, const char *text) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text || v < 0) {
        fprintf(stderr, "loadgen.c: --%s=%s is not a whole number >= 0\n", name, text);
        exit(2);
    }
    return v;
}

static void refuse(const char *name, const char *value) {
    fprintf(stderr,
            "loadgen.c: --%s=%s: this generator runs healthy clients only "
            "(use benchmarks.loadgen, the Python one, for stalled, churning, slow or deflate)\n",
            name, value);
    exit(2);
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"port", required_argument, 0, 'p'},      {"clients", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},      {"stalled", required_argument, 0, 'S'},
        {"deflate", no_argument, 0, 'd'},         {"churn", required_argument, 0, 'C'},
        {"resume-after", required_argument, 0, 'r'}, {"slow", required_argument, 0, 'w'},
        {"slow-rate", required_argument, 0, 'R'}, {0, 0, 0, 0},
    };
    long port = -1;
    nclients = -1;
    size = -1;
    int opt, at;
    while ((opt = getopt_long(argc, argv, "", options, &at)) != -1) {
        const char *name = opt == '?' ? NULL : options[at].name;
        switch (opt) {
        case 'p': port = number(name, optarg); break;
        case 'c': nclients = number(name, optarg); break;
        case 's': size = number(name, optarg); break;
        case 'd': refuse(name, "on"); break;
        case 'S': case 'C': case 'r': case 'w': case 'R':
            if (strtod(optarg, NULL) != 0) refuse(name, optarg);
            break;
        default: exit(2); /* getopt named the argument */
        }
    }
    if (optind < argc || port < 0 || port > 65535 || nclients < 0 || size < 0) {
        fprintf(stderr, "usage: loadgen --port N --clients N --size BYTES\n");
        exit(2);
    }
    if (size < MIN_SIZE) {
        fprintf(stderr, "loadgen.c: --size=%ld must be >= %d\n", size, MIN_SIZE);
        exit(2);
    }
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) < 0) die("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1: %s", strerror(errno));
    clients = calloc((size_t)nclients + 1, sizeof *clients);
    if (!clients) die("out of memory for %ld clients", nclients);
    for (long i = 0; i < nclients; i++) {
        handshake(&clients[i], i, (int)port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, clients[i].fd, &ev) < 0)
            die("epoll_ctl: %s", strerror(errno));
    }
    printf("{\"event\": \"connected\", \"negotiated\": 0}\n");
    fflush(stdout);

    char control[256] = {0};
    size_t clen = 0;
    if (!wait_for(control, &clen, sizeof control, "go")) return 0;
    /* What is after "go" may already hold "stop"; search from there only. */
    char *after = strstr(control, "go") + 2;
    clen = strlen(after);
    memmove(control, after, clen + 1);

    int64_t cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID), wall0 = now_ns(CLOCK_MONOTONIC);
    struct rusage usage0, usage1;
    getrusage(RUSAGE_SELF, &usage0);
    long open = nclients;
    for (long i = 0; i < nclients; i++) {  /* bytes that came with the handshake response */
        Client *c = &clients[i];
        if (c->len) {
            size_t n = c->len;
            c->len = 0;
            c->nbytes += n;
            feed(c, i, c->buf, n, now_ns(CLOCK_MONOTONIC));
        }
        open -= c->closed;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CONTROL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll_ctl(stdin): %s", strerror(errno));
    static uint8_t data[RECV_SIZE];
    struct epoll_event events[1024];
    int stop = strstr(control, "stop") != NULL;
    /* Until "stop" (or the end of stdin), or until the server has closed every connection:
     * then nothing more can arrive. */
    while (!stop && (open > 0 || nclients == 0)) {
        int ready = epoll_wait(ep, events, 1024, 1000);
        if (ready < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int e = 0; e < ready; e++) {
            uint32_t tag = events[e].data.u32;
            if (tag == CONTROL) {
                if (read_control(control, &clen, sizeof control) <= 0 || strstr(control, "stop"))
                    stop = 1;
                continue;
            }
            Client *c = &clients[tag];
            ssize_t r = recv(c->fd, data, sizeof data, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            int was_closed = c->closed;
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                c->closed = 1;
            } else if (c->closed) {
                c->nbytes += (uint64_t)r;  /* after its close frame: counted, not parsed */
            } else {
                arrived(c, tag, data, (size_t)r, now_ns(CLOCK_MONOTONIC));
            }
            open -= !was_closed && c->closed;
        }
    }
    double cpu = (double)(now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / 1e9;
    double wall = (double)(now_ns(CLOCK_MONOTONIC) - wall0) / 1e9;
    getrusage(RUSAGE_SELF, &usage1);
    print_result(cpu, wall, rusage_s(usage1.ru_utime) - rusage_s(usage0.ru_utime),
                 rusage_s(usage1.ru_stime) - rusage_s(usage0.ru_stime));
    /* The driver sends "stop" when it wants the result; if every connection closed
     * first, wait for it so that writing "stop" to this process does not fail. */
    if (!stop) wait_for(control, &clen, sizeof control, "stop");
    return 0;
}
