// Package deploy has no code of its own: its tests check the deployment files at the
// repository root without a Docker engine.
//
//   - docker-compose.yml is loaded with the compose-spec loader (the one Docker Compose
//     uses) and checked for what `docker compose up --scale bg-worker=3` needs: no
//     container_name, no fixed host port and no WORKER_ID on bg-worker; healthchecks on
//     postgres (pg_isready), versitygw and bg-worker (`bg-worker healthcheck`); bg-worker
//     waiting for healthy services and a completed migrate; a stop_grace_period above
//     SHUTDOWN_TIMEOUT; only variables that internal/config reads, and all of them; and
//     that real R2 and an external database need changes to the environment only.
//   - .env.example names every variable and nothing unknown; .env is git-ignored and
//     docker-ignored.
//   - Dockerfile is multi-stage with a distroless nonroot final image and module cache
//     mounts, and its `go build` line, run here with CGO_ENABLED=0, gives a static binary.
//   - README.md's configuration table lists exactly the variables internal/config reads,
//     with their real defaults; its metrics list names every metric of internal/metrics;
//     its SQL runs on a migrated database.
package deploy
