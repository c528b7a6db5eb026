// Package store is bg-worker's database access: a pgx pool, the sqlc-generated queries in
// dbsqlc (from queries/*.sql, with migrations/ as the schema), and small wrappers that
// hide pgx's errors behind this package's own (ErrNotFound).
//
// Lock sessions do not come from this pool: internal/lock opens its own connections with
// ParseConfig, so an exhausted pool can never starve leadership.
package store
