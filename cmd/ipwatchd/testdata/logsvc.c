/* logsvc: a classic inetd service that logs through syslog(3), as
   in.ftpd or in.fingerd do: argv[1] messages, then "done" to the client. */
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <unistd.h>

int main(int argc, char **argv) {
	int i, n = argc > 1 ? atoi(argv[1]) : 1;
	openlog("logsvc", LOG_PID, LOG_DAEMON);
	for (i = 0; i < n; i++)
		syslog(LOG_INFO, "message %d of %d, uid %d", i + 1, n, (int)getuid());
	closelog();
	write(1, "done\n", 5);
	return 0;
}
