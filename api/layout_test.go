package api

import (
	"testing"
)

func testLayout(count int, size uint32) Layout {
	l := Layout{StripeCount: int32(count), StripeSize: size}
	for i := 0; i < count; i++ {
		l.Objects = append(l.Objects, StripeObject{OST: uint32(i), ObjID: 7})
	}
	return l
}

func TestMapExtent(t *testing.T) {
	l := testLayout(4, 64<<10)
	cases := []struct {
		name string
		off  int64
		n    int
		want []Piece
	}{
		{"inside one stripe", 100, 10, []Piece{{Stripe: 0, ObjOff: 100, BufOff: 0, Len: 10}}},
		{"crossing into stripe 1", 65530, 10, []Piece{{0, 65530, 0, 6}, {1, 0, 6, 4}}},
		{"second round", 4*65536 + 5, 3, []Piece{{0, 65536 + 5, 0, 3}}},
		{"whole round", 0, 4 * 65536, []Piece{{0, 0, 0, 65536}, {1, 0, 65536, 65536}, {2, 0, 131072, 65536}, {3, 0, 196608, 65536}}},
		{"empty", 5, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := l.MapExtent(tc.off, tc.n, nil)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("piece %d: got %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestObjectSizeMatchesMapExtent checks truncation arithmetic against the
// mapping: the per-object sizes of a file of size s are exactly the ends of
// the pieces of [0, s).
func TestObjectSizeMatchesMapExtent(t *testing.T) {
	for _, count := range []int{1, 2, 3, 4, 7} {
		l := testLayout(count, 64<<10)
		for _, size := range []int64{0, 1, 65535, 65536, 65537, 3*65536 + 9, 1 << 20, 10*65536*int64(count) + 12345} {
			want := make([]int64, count)
			for _, p := range l.MapExtent(0, int(size), nil) {
				want[p.Stripe] = max(want[p.Stripe], p.ObjOff+int64(p.Len))
			}
			for i := 0; i < count; i++ {
				if got := l.ObjectSize(i, size); got != want[i] {
					t.Fatalf("count %d size %d stripe %d: ObjectSize %d, mapping says %d", count, size, i, got, want[i])
				}
			}
		}
	}
}

func TestValidateRequest(t *testing.T) {
	cases := []struct {
		name string
		l    Layout
		osts int
		code Code
	}{
		{"default", DefaultLayout(), 4, CodeOK},
		{"all OSTs", Layout{StripeCount: -1, StripeSize: 1 << 20, StripeOffset: -1}, 4, CodeOK},
		{"too many stripes", Layout{StripeCount: 5, StripeSize: 1 << 20, StripeOffset: -1}, 4, CodeInvalid},
		{"size not 64K multiple", Layout{StripeCount: 1, StripeSize: 100 << 10, StripeOffset: -1}, 4, CodeInvalid},
		{"zero size", Layout{StripeCount: 1, StripeOffset: -1}, 4, CodeInvalid},
		{"zero count", Layout{StripeCount: 0, StripeSize: 1 << 20}, 4, CodeInvalid},
		{"bad offset", Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -2}, 4, CodeInvalid},
		{"largest DoM", Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1, DoMSize: MaxDoMSize}, 4, CodeOK},
		{"DoM not 64K multiple", Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1, DoMSize: 100 << 10}, 4, CodeInvalid},
		{"DoM too large", Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1, DoMSize: MaxDoMSize + StripeSizeUnit}, 4, CodeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CodeOf(tc.l.ValidateRequest(tc.osts)); got != tc.code {
				t.Fatalf("got %q, want %q", got, tc.code)
			}
		})
	}
}

func TestLayoutTextRoundTrip(t *testing.T) {
	l := testLayout(3, 1<<20)
	l.StripeOffset = 2
	got, err := ParseLayout(l.XattrValue())
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != l.String() {
		t.Fatalf("got %v, want %v", got, l)
	}
	if _, err := ParseLayout([]byte("{")); CodeOf(err) != CodeInvalid {
		t.Fatalf("bad layout text: %v", err)
	}
}

func BenchmarkMapExtent1MiB4Stripes(b *testing.B) {
	l := testLayout(4, 64<<10)
	var buf []Piece
	for i := 0; b.Loop(); i++ {
		buf = l.MapExtent(int64(i)<<20, 1<<20, buf)
	}
}
