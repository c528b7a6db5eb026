// Package testenv gives tests a real PostgreSQL and a real S3-protocol server.
//
// Nothing is mocked: tests talk to a PostgreSQL 15 server started from the initdb/pg_ctl on
// PATH and to versitygw (an S3 gateway serving a local directory), or to servers named by
// environment variables.
//
// # Contract
//
// A package that uses testenv wires it into its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// Main runs the tests and then stops every server this test binary started and removes
// their temporary directories.
//
// Servers start lazily, at most once per test binary, on first use, and are shared by all
// tests of that binary; every test gets its own isolated database or bucket on them:
//
//   - DatabaseURL(t) returns the URL of a fresh database with every migration applied.
//     Migrations run once per server into a template database; each test's database is a
//     CREATE DATABASE ... TEMPLATE copy of it, so a migrated database costs tens of
//     milliseconds, not a migration run. The database is dropped (WITH (FORCE)) in
//     t.Cleanup.
//   - EmptyDatabaseURL(t) is the same with no migration applied (for migration tests).
//   - NewPostgresServer(t) starts a PostgreSQL server just for the calling test, for tests
//     that stop, start or restart the server. It is stopped and removed in t.Cleanup. It
//     always runs locally, even when TEST_DATABASE_URL is set.
//   - Bucket(t) creates a fresh, uniquely named bucket and returns how to reach it; it is
//     emptied and deleted in t.Cleanup. S3Client(t, info) returns an aws-sdk-go-v2 client
//     for seeding objects (path-style, static credentials, checksums only when required).
//
// All helpers call t.Helper, register their cleanups with t.Cleanup and are safe to call
// from parallel tests.
//
// When a server cannot be started (no PostgreSQL binaries, versitygw fails to build, a port
// never answers), the test is skipped with the reason, or fails when CI=true so that a
// broken CI machine never passes by skipping everything. Error messages carry the tail of
// the server's log.
//
// # Environment
//
//	CI=true                    a server that cannot start fails the test instead of skipping it
//	TEST_DATABASE_URL          use this PostgreSQL (postgres:// URL form) instead of starting one;
//	                           its user needs CREATEDB. Per-test databases are created on it with
//	                           the URL's credentials and query parameters; the migrated template
//	                           is named testenv_tpl_* and dropped by Main.
//	TEST_S3_ENDPOINT           use this S3 endpoint (e.g. http://127.0.0.1:7070) instead of
//	                           starting versitygw; addressed path-style
//	TEST_S3_ACCESS_KEY_ID      its access key (required with TEST_S3_ENDPOINT)
//	TEST_S3_SECRET_ACCESS_KEY  its secret key (required with TEST_S3_ENDPOINT)
//	TEST_S3_REGION             its signing region (default "auto")
//	VERSITYGW_BIN              the versitygw binary to run
//
// Without VERSITYGW_BIN, testenv uses <repo>/.bin/versitygw when it is newer than
// <repo>/tools/go.mod, and otherwise builds it from the version pinned in tools/go.mod
// (go build, run in <repo>/tools; a few minutes on a fresh machine). Concurrent test
// binaries serialise that build on a lock file, <repo>/.bin/.lock.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the tests run as root, initdb and postgres run
// with the postgres user's uid and gid, in a temporary directory owned by that user.
//
// # Leaks
//
// The servers are started by internal/devservers. PostgreSQL (the postmaster itself, not
// pg_ctl) and versitygw run as children of the test binary, each in its own process group,
// and get SIGKILL when the test binary dies, even by kill -9 (Pdeathsig); PostgreSQL's
// backends exit on their own when the postmaster dies. Every server's temporary directory
// (testenv-pg-*, testenv-s3-*) also has a small watchdog shell process in its own session
// that waits on a pipe from the test binary: if the binary exits without cleaning up (a
// test timeout panic, kill -9, a TestMain without Main), the pipe closes and the watchdog
// removes the directory.
package testenv
