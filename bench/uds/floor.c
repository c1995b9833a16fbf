/* floor: the machine's floor for one question over a Unix socket, as
 * virtuald asks ipwatchd: connect, write a request, read the reply, close.
 *   floor server PATH       answer every connection with a fixed reply
 *   floor client PATH N [REQUEST]
 *                           ask N times (the bytes of file REQUEST, or a
 *                           request's worth of zeros), print the mean µs
 * The request and reply are the size of a resolve and its answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>

static char request[4096], reply[4096];
static size_t reqlen = 160, replen = 200;

static int addr(struct sockaddr_un *sa, const char *path) {
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	strncpy(sa->sun_path, path, sizeof sa->sun_path - 1);
	return sizeof *sa;
}

int main(int argc, char **argv) {
	struct sockaddr_un sa;
	if (argc >= 3 && !strcmp(argv[1], "server")) {
		int l = socket(AF_UNIX, SOCK_STREAM, 0);
		unlink(argv[2]);
		if (bind(l, (struct sockaddr *)&sa, addr(&sa, argv[2])) || listen(l, 1024)) { perror("bind"); return 1; }
		for (;;) {
			int c = accept(l, 0, 0);
			if (c < 0) continue;
			if (read(c, request, reqlen) > 0) write(c, reply, replen);
			close(c);
		}
	}
	if (argc >= 4 && !strcmp(argv[1], "client")) {
		int n = atoi(argv[3]);
		if (argc >= 5) {
			FILE *f = fopen(argv[4], "r");
			if (!f) { perror(argv[4]); return 1; }
			reqlen = fread(request, 1, sizeof request, f);
			fclose(f);
		}
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < n; i++) {
			int c = socket(AF_UNIX, SOCK_STREAM, 0);
			if (connect(c, (struct sockaddr *)&sa, addr(&sa, argv[2]))) { perror("connect"); return 1; }
			write(c, request, reqlen);
			read(c, reply, sizeof reply);
			close(c);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("%.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n);
		return 0;
	}
	fprintf(stderr, "usage: floor server PATH | floor client PATH N\n");
	return 2;
}
