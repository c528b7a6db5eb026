package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// logPrefix starts every PostgreSQL log entry (log_line_prefix = logPrefix + "%a|"), so
// an entry's continuation lines (multi-line SQL) are told apart from the next entry.
const logPrefix = "BGB|"

// stmtLog counts the statements PostgreSQL logged (log_statement = all) per
// application_name, which bg-worker sets to WORKER_ID on every session it opens (pool,
// lock sessions, listener). Each logged statement is one Query/Execute the client sent:
// one round trip, except that pgx's statement cache adds one Parse/Describe round trip
// the first time a connection runs a given query (not logged, not counted).
type stmtLog struct{ path string }

func (l *stmtLog) offset() int64 {
	fi, err := os.Stat(l.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// stmtCounts are the statements one application_name sent.
type stmtCounts struct {
	Total  int            `json:"total"`
	ByKind map[string]int `json:"by_kind"`
}

// count parses the log between two offsets.
func (l *stmtLog) count(from, to int64) (map[string]*stmtCounts, error) {
	var out map[string]*stmtCounts
	err := readLog(l.path, from, to, func(r io.Reader) (err error) {
		out, err = parseStmtLog(r)
		return err
	})
	return out, err
}

// readLog calls fn with the log file's bytes between two offsets.
func readLog(path string, from, to int64, fn func(io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return err
	}
	return fn(io.LimitReader(f, to-from))
}

// parseStmtLog counts the statements in PostgreSQL log text, per application_name.
func parseStmtLog(r io.Reader) (map[string]*stmtCounts, error) {
	out := map[string]*stmtCounts{}
	var app string
	var sql strings.Builder
	inStmt := false
	flush := func() {
		if !inStmt {
			return
		}
		c := out[app]
		if c == nil {
			c = &stmtCounts{ByKind: map[string]int{}}
			out[app] = c
		}
		c.Total++
		c.ByKind[sqlKind(sql.String())]++
		inStmt = false
		sql.Reset()
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(logPrefix)) {
			if inStmt {
				sql.WriteByte('\n')
				sql.Write(line)
			}
			continue
		}
		flush()
		rest := string(line[len(logPrefix):])
		i := strings.IndexByte(rest, '|')
		if i < 0 {
			continue
		}
		a, msg := rest[:i], rest[i+1:]
		var text string
		switch {
		case strings.HasPrefix(msg, "LOG:  statement: "):
			text = strings.TrimPrefix(msg, "LOG:  statement: ")
		case strings.HasPrefix(msg, "LOG:  execute "):
			text = strings.TrimPrefix(msg, "LOG:  execute ")
			if j := strings.Index(text, ": "); j >= 0 {
				text = text[j+2:]
			}
		default:
			continue
		}
		app, inStmt = a, true
		sql.WriteString(text)
	}
	flush()
	return out, sc.Err()
}

// sqlKind names a statement: the sqlc query name, or what a hand-written one does.
func sqlKind(sql string) string {
	s := strings.TrimSpace(sql)
	ls := strings.ToLower(s)
	switch {
	case ls == "begin" || strings.HasPrefix(ls, "begin "):
		return "tx:begin"
	case ls == "commit":
		return "tx:commit"
	case ls == "rollback":
		return "tx:rollback"
	case strings.HasPrefix(s, "-- ping"):
		return "pool:ping"
	case strings.HasPrefix(s, "-- name: "):
		name := strings.TrimPrefix(s, "-- name: ")
		if j := strings.IndexAny(name, " \n"); j >= 0 {
			name = name[:j]
		}
		return name
	case strings.Contains(s, "pg_try_advisory_lock"):
		return "lock:try"
	case strings.Contains(s, "pg_advisory_unlock"):
		return "lock:unlock"
	case strings.Contains(s, "pg_backend_pid() = $3"):
		return "lock:heartbeat"
	case strings.Contains(s, "FOR SHARE OF r"):
		return "fence:check"
	case strings.HasPrefix(ls, "listen"):
		return "listen"
	case strings.Contains(ls, "pg_notify"):
		return "notify"
	case strings.Contains(s, "upload_mapping"):
		return "schema:fingerprint" // the installed mapping's fingerprint (start-up)
	case strings.Contains(s, "n.oid IS NOT NULL") && strings.Contains(ls, "has_schema_privilege"):
		return "schema:access" // the worker's schema exists and is usable (start-up)
	case strings.Contains(s, "worker_lock_holders"):
		return "status:holders"
	case strings.Contains(s, "schema_migrations") || strings.Contains(ls, "migration"):
		return "schema:version"
	}
	first := s
	if j := strings.IndexByte(first, '\n'); j >= 0 {
		first = first[:j]
	}
	if len(first) > 48 {
		first = first[:48]
	}
	return "other:" + first
}

// kindsLine lists kinds and their counts, most frequent first: "a 3, b 1".
func kindsLine(kinds map[string]int) string {
	parts := make([]string, 0, len(kinds))
	for _, k := range kindsSorted(kinds) {
		parts = append(parts, fmt.Sprintf("%s %d", k, kinds[k]))
	}
	return strings.Join(parts, ", ")
}

// kindsSorted lists kinds by count, descending.
func kindsSorted(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if m[ks[i]] != m[ks[j]] {
			return m[ks[i]] > m[ks[j]]
		}
		return ks[i] < ks[j]
	})
	return ks
}
