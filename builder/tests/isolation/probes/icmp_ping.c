/* Probe for `icmp_echo_works_on_the_default_network_without_net_raw`
   (builder/tests/isolation/network.rs): one ICMP echo through a datagram
   socket (SOCK_DGRAM, IPPROTO_ICMP), what `ping` uses without CAP_NET_RAW;
   the namespace's ping_group_range decides who may open one.
   Usage: icmp_ping ADDR...; prints `ping-ok ADDR as UID` or `ping-FAILED ADDR ...`. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        struct sockaddr_in to = {0};
        to.sin_family = AF_INET;
        if (inet_pton(AF_INET, argv[i], &to.sin_addr) != 1) { printf("ping-FAILED %s bad address\n", argv[i]); continue; }
        int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
        if (s < 0) { printf("ping-FAILED %s socket errno=%d\n", argv[i], errno); continue; }
        /* Echo request; the kernel sets the identifier and the checksum. */
        unsigned char req[16] = {8, 0, 0, 0, 0, 0, 0, 1, 'r', 'b', 'u', 'i', 'l', 'd', '!', '!'};
        if (sendto(s, req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0) {
            printf("ping-FAILED %s sendto errno=%d\n", argv[i], errno);
            close(s);
            continue;
        }
        struct pollfd p = {s, POLLIN, 0};
        unsigned char reply[128];
        ssize_t n = poll(&p, 1, 3000) == 1 ? recv(s, reply, sizeof reply, 0) : -1;
        if (n >= 8 && reply[0] == 0 /* echo reply */ && memcmp(reply + 8, req + 8, 8) == 0)
            printf("ping-ok %s as %d\n", argv[i], (int)getuid());
        else
            printf("ping-FAILED %s no reply\n", argv[i]);
        close(s);
    }
    return 0;
}
