package meta

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stria/stria/api"
)

// TestEncodeChangeRecordIsJSON: the hand-written encoder writes exactly
// what json.Marshal does, for records with every field set or left out and
// names holding quotes, backslashes, HTML characters, control bytes,
// non-ASCII and invalid UTF-8.
func TestEncodeChangeRecordIsJSON(t *testing.T) {
	names := []string{"", "f", "a b", `q"uote`, `back\slash`, "<tag>&amp;", "ctl\x01\x1f\t\n", "del\x7f", "héllo", "日本", "bad\xff\xfeutf8", "\u2028sep\u2029", "x/y", "f.txt"}
	types := []string{api.ChangeCreate, api.ChangeUnlink, api.ChangeRename, api.ChangeClose}
	rng := rand.New(rand.NewPCG(1, 2))
	num := func() uint64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return rng.Uint64()
		default:
			return uint64(rng.IntN(100000))
		}
	}
	for i := range 5000 {
		r := api.ChangeRecord{
			Seq: num(), Type: types[rng.IntN(len(types))], Time: int64(num()), Ino: num(),
			Parent: num(), Name: names[rng.IntN(len(names))], NewParent: num(), NewName: names[rng.IntN(len(names))],
			Mode: uint32(num()), Size: num(),
		}
		if i%7 == 0 {
			r.Time = -r.Time
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeChangeRecord(r); string(got) != string(want) {
			t.Fatalf("record %+v:\n got %s\nwant %s", r, got, want)
		}
	}
}

func BenchmarkEncodeChangeRecord(b *testing.B) {
	r := api.ChangeRecord{Seq: 123456, Type: api.ChangeUnlink, Time: 1764720000123456789, Ino: 987654, Parent: 4567, Name: "file-000123.dat", Mode: 0o100644}
	b.Run("hand", func(b *testing.B) {
		for b.Loop() {
			encodeChangeRecord(r)
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal(r)
		}
	})
}
