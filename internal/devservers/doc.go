// Package devservers starts throwaway local servers for development tools (cmd/bg-demo, the
// bench): a PostgreSQL server from the initdb/postgres binaries on PATH and versitygw, an
// S3-compatible gateway serving a local directory. internal/testenv, the test harness,
// starts its servers with it too.
//
// # Nothing outlives the caller
//
// Every server runs as a direct child of the calling process, in its own process group (so
// a terminal's Ctrl-C reaches only the caller, which then stops the servers in order), with
// a parent-death signal (SIGKILL when the caller dies, even by kill -9). PostgreSQL is run
// as the postmaster itself, not through pg_ctl, so that it stays a child; its backends exit
// on their own when the postmaster dies.
//
// Every server lives in its own temporary directory. A small watchdog shell, in a session of
// its own, waits on a pipe from the caller: if the caller dies without calling Stop, the pipe
// closes and the watchdog removes the directory. TempDir gives callers the same guarantee
// for directories of their own.
//
// # Running as root
//
// PostgreSQL refuses to run as root. As root, initdb and postgres run with the postgres
// user's uid and gid (set directly on the child, no runuser or sudo needed) in a directory
// owned by that user.
package devservers
