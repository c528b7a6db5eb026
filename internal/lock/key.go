package lock

import (
	"fmt"
	"hash/fnv"

	"github.com/bg-worker/bg-worker/migrations"
)

// Key names one advisory lock, taken with the two-int form
// pg_advisory_lock(Namespace, ID); pg_locks shows it as classid = Namespace,
// objid = ID, objsubid = 2.
type Key struct {
	Namespace int32
	ID        int32
}

// KeyFor derives a job's key from its name: FNV-1a folded into [1, 2^31) in bg-worker's
// own namespace (ID 0 is the migration lock). Deterministic across replicas and releases.
func KeyFor(name string) Key {
	h := fnv.New32a()
	h.Write([]byte(name))
	id := int32(h.Sum32() & 0x7fffffff)
	if id == 0 {
		id = 1
	}
	return Key{Namespace: migrations.LockNamespace, ID: id}
}

func (k Key) String() string { return fmt.Sprintf("(%d,%d)", k.Namespace, k.ID) }

// CheckCollisions returns an error naming two names that map to the same key.
func CheckCollisions(names []string) error {
	seen := map[Key]string{}
	for _, n := range names {
		k := KeyFor(n)
		if other, ok := seen[k]; ok && other != n {
			return fmt.Errorf("jobs %q and %q have the same advisory-lock key %s; rename one", other, n, k)
		}
		seen[k] = n
	}
	return nil
}
