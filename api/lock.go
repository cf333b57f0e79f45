package api

// The lock service (lockd) wire contract: namespace locks on directories.
//
// A directory's lock covers what a client may cache about it: its entries
// (names, present or absent), its attributes, and the attributes of every
// non-directory whose only link it holds (Attr.Parent). Clients hold locks in
// a shared mode (PR, protected read) for as long as they like. Meta, before
// it applies a change, takes a change barrier (a concurrent-write lock) on
// every directory whose covered state the change alters, on behalf of the
// client that asked: lockd recalls the other clients' locks with a callback
// (they drop what they cached and answer), holds new grants back until meta
// is done, and only then lets meta apply the change. The asking client keeps
// its own lock and updates its cache from meta's reply.
//
// Leases: a client pings lockd every lease/4 and trusts its locks only until
// the time it sent its last answered ping plus the lease. Lockd forgets a
// client it has not heard from for a lease (it stopped trusting by then), and
// one that failed a callback once its lease has run out; such a client is
// told CodeEvicted and registers again under a new id. A restarted lockd
// (a new Instance) lets no change through for a lease after it starts, so
// locks granted by the previous instance have lapsed before anything they
// cover can change.

// Lock service operations, each on LockSubject(fsname, op).
const (
	LockOpPing    = "ping"
	LockOpEnqueue = "enqueue"
	LockOpCancel  = "cancel"
	LockOpChange  = "change"
	LockOpDone    = "done"
)

// LockOps lists the lock service's operations.
var LockOps = []string{LockOpPing, LockOpEnqueue, LockOpCancel, LockOpChange, LockOpDone}

// MaxLockDirs bounds the directories of one lock request.
const MaxLockDirs = 64

// LockSubject is the NATS subject of one lock service operation.
func LockSubject(fsname, op string) string { return "stria." + fsname + ".lockd." + op }

// LockCallbackSubject is where lockd recalls a client's locks.
func LockCallbackSubject(fsname, client string) string {
	return "stria." + fsname + ".lockd.cb." + client
}

// HeaderClient carries the lock client id of the mount that sends a meta
// request: meta's change barrier leaves that client's own locks in place.
const HeaderClient = "Stria-Client"

// ValidClientID reports whether id can name a lock client (it is a NATS
// subject token): 1 to 64 of a-z, 0-9 and -. Meta checks it on every
// namespace change, so by hand: a regexp was 1.5 % of a create's CPU.
func ValidClientID(id string) error {
	ok := len(id) >= 1 && len(id) <= 64
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-'
	}
	if !ok {
		return Errorf(CodeInvalid, "lock client id %q: 1 to 64 of a-z, 0-9 and -", id)
	}
	return nil
}

// ValidLockDirs checks the directories of a lock request.
func ValidLockDirs(dirs []uint64) error {
	if len(dirs) == 0 || len(dirs) > MaxLockDirs {
		return Errorf(CodeInvalid, "lock request names %d directories: 1 to %d", len(dirs), MaxLockDirs)
	}
	for _, d := range dirs {
		if d == 0 {
			return Errorf(CodeInvalid, "lock request names inode 0")
		}
	}
	return nil
}

// LockPingReq registers a new client (Register) or renews a known one's
// lease. An unknown or evicted client gets CodeEvicted.
type LockPingReq struct {
	Client   string `json:"client"`
	Register bool   `json:"register,omitempty"`
}

// LockPingResp names the lockd instance and the lease it grants.
type LockPingResp struct {
	Instance string `json:"instance"`
	LeaseNS  int64  `json:"lease_ns"`
}

// LockEnqueueReq asks for shared locks on directories; the reply comes once
// they are granted (after any change barrier on them is done).
type LockEnqueueReq struct {
	Client string   `json:"client"`
	Dirs   []uint64 `json:"dirs"`
}

// LockGrantResp grants an enqueue; Instance lets the client tell a grant
// from a lockd it no longer trusts.
type LockGrantResp struct {
	Instance string `json:"instance"`
}

// LockCancelReq gives locks back.
type LockCancelReq struct {
	Client string   `json:"client"`
	Dirs   []uint64 `json:"dirs"`
}

// LockChangeReq takes a change barrier on directories for a change asked by
// client For ("" when no client asked, e.g. meta's own clean-up).
type LockChangeReq struct {
	Client string   `json:"client"`
	For    string   `json:"for,omitempty"`
	Dirs   []uint64 `json:"dirs"`
}

// LockChangeResp comes once every other client's lock on the directories is
// recalled; Token ends the barrier (LockOpDone).
type LockChangeResp struct {
	Token uint64 `json:"token"`
}

// LockDoneReq ends a change barrier.
type LockDoneReq struct {
	Client string `json:"client"`
	Token  uint64 `json:"token"`
}

// LockRevokeReq is the callback lockd sends a client: drop what the locks on
// these directories covered and answer; the locks are gone once answered.
type LockRevokeReq struct {
	Dirs []uint64 `json:"dirs"`
}
