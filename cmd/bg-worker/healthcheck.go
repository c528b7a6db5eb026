package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/bg-worker/bg-worker/internal/config"
)

// cmdHealthcheck GETs /healthz on HTTP_ADDR, for images without curl.
func cmdHealthcheck(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) error {
	fs := newFlags("healthcheck", stderr)
	path := fs.String("path", "/healthz", "endpoint to check (/healthz or /readyz)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env, false)
	if err != nil {
		return err
	}
	if cfg.HTTPAddr == "" {
		return &usageError{&config.Error{Var: "HTTP_ADDR", Msg: "is empty: the health endpoint is off"}}
	}
	host, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		return &usageError{&config.Error{Var: "HTTP_ADDR", Msg: fmt.Sprintf("%q is not host:port", cfg.HTTPAddr)}}
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + *path
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprint(stdout, string(body))
	return nil
}
