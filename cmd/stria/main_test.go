package main

import (
	"bytes"
	"flag"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stria/stria/api"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"65536", 65536, true},
		{"64K", 64 << 10, true},
		{"1m", 1 << 20, true},
		{"4G", 4 << 30, true},
		{" 2M ", 2 << 20, true},
		{"0", 0, false},
		{"", 0, false},
		{"-1M", 0, false},
		{"1.5M", 0, false},
		{"lots", 0, false},
		{"2048G", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

// Flags win over the environment, which wins over defaults.
func TestApplyEnvPrecedence(t *testing.T) {
	t.Setenv("STRIA_NATS", "nats://env:4222")
	t.Setenv("STRIA_LEASE_TTL", "7s")
	t.Setenv("STRIA_DATA_DIR", "/from/env")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	nats := fs.String("nats", "nats://default:4222", "")
	ttl := fs.Duration("lease-ttl", 0, "")
	data := fs.String("data-dir", "", "")
	if err := parse(fs, []string{"--data-dir", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if *nats != "nats://env:4222" || ttl.String() != "7s" || *data != "/from/flag" {
		t.Fatalf("got nats=%s ttl=%v data=%s", *nats, *ttl, *data)
	}
	t.Setenv("STRIA_LEASE_TTL", "soon")
	fs = flag.NewFlagSet("y", flag.ContinueOnError)
	fs.Duration("lease-ttl", 0, "")
	if err := parse(fs, nil); err == nil || !strings.Contains(err.Error(), "STRIA_LEASE_TTL") {
		t.Fatalf("a bad environment value must name the variable: %v", err)
	}
}

func TestPrintDF(t *testing.T) {
	r := api.StatFSResp{
		Inodes: 10, MaxInodes: 1000, MetaTotal: 1 << 30, MetaFree: 1 << 29, MetaAvail: 1 << 29,
		OSTs: []api.OSTStat{
			{Index: 0, Up: true, Total: 4 << 30, Free: 3 << 30, Avail: 3 << 30},
			{Index: 1, Up: false, Error: "not registered"},
		},
	}
	var out bytes.Buffer
	printDF(&out, "/mnt/stria", "lab", r, true)
	s := out.String()
	for _, want := range []string{"lab-MDT0000_UUID", "lab-OST0000_UUID", "lab-OST0001_UUID", "unavailable: not registered", "filesystem_summary:", "4.0G", "25%"} {
		if !strings.Contains(s, want) {
			t.Errorf("df output lacks %q:\n%s", want, s)
		}
	}
}

func TestCheckLayoutAgainst(t *testing.T) {
	osts := []api.OSTStat{{Index: 0, Up: true}, {Index: 1, Up: true}, {Index: 2, Up: false}, {Index: 3, Up: true}}
	cases := []struct {
		name string
		l    api.Layout
		ok   bool
	}{
		{"all OSTs", api.Layout{StripeCount: -1, StripeSize: 1 << 20, StripeOffset: -1}, true},
		{"as many as are up", api.Layout{StripeCount: 3, StripeSize: 1 << 20, StripeOffset: -1}, true},
		{"more than are up", api.Layout{StripeCount: 4, StripeSize: 1 << 20, StripeOffset: -1}, false},
		{"start on an up OST", api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 3}, true},
		{"start on a down OST", api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 2}, false},
		{"start on an unknown OST", api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 9}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkLayoutAgainst(tc.l, osts)
			if (err == nil) != tc.ok {
				t.Fatalf("checkLayoutAgainst(%v) = %v, want ok=%v", tc.l, err, tc.ok)
			}
		})
	}
}

func TestWithLazyFree(t *testing.T) {
	cases := []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"A=1"}, []string{"A=1", "GODEBUG=madvdontneed=0"}, true},
		{"other settings kept", []string{"GODEBUG=gctrace=1", "B=2"}, []string{"B=2", "GODEBUG=gctrace=1,madvdontneed=0"}, true},
		{"empty GODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=madvdontneed=0"}, true},
		{"already set: no re-execution", []string{"GODEBUG=gctrace=1,madvdontneed=0"}, []string{"GODEBUG=gctrace=1,madvdontneed=0"}, false},
		{"the user's choice stands", []string{"GODEBUG=madvdontneed=1"}, []string{"GODEBUG=madvdontneed=1"}, false},
		{"the first GODEBUG counts, duplicates go", []string{"GODEBUG=x=1", "GODEBUG=madvdontneed=1"}, []string{"GODEBUG=x=1,madvdontneed=0"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := withLazyFree(tc.env)
			if changed != tc.changed || !slices.Equal(got, tc.want) {
				t.Errorf("withLazyFree(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
			}
		})
	}
}

// envWith is a getenv whose environment holds only key=value.
func envWith(key, value string) func(string) string {
	return func(k string) string {
		if k == key {
			return value
		}
		return ""
	}
}

func TestServiceGC(t *testing.T) {
	env := func(gogc string) func(string) string { return envWith("GOGC", gogc) }
	if pct, ok := serviceGC(env("")); !ok || pct != serviceGCPercent {
		t.Errorf("without GOGC: %d, %v; want %d", pct, ok, serviceGCPercent)
	}
	for _, v := range []string{"100", "off", "50"} {
		if _, ok := serviceGC(env(v)); ok {
			t.Errorf("GOGC=%s: the service sets its own", v)
		}
	}
}

func TestMountProcs(t *testing.T) {
	env := func(v string) func(string) string { return envWith("GOMAXPROCS", v) }
	for _, tc := range []struct{ procs, want int }{{1, 4}, {2, 8}, {8, 32}, {16, 48}, {64, 96}} {
		if got, ok := mountProcs(env(""), tc.procs); !ok || got != tc.want {
			t.Errorf("mountProcs(%d) = %d, %v; want %d", tc.procs, got, ok, tc.want)
		}
	}
	if _, ok := mountProcs(env("3"), 2); ok {
		t.Error("GOMAXPROCS=3 in the environment: the mount sets its own")
	}
}

func TestSetTimerSlack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting another thread's timer slack needs CAP_SYS_NICE (root)")
	}
	slack := func(tid string) string {
		b, err := os.ReadFile("/proc/" + tid + "/timerslack_ns")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	threads := func() []string {
		tids, err := threadIDs()
		if err != nil {
			t.Fatal(err)
		}
		return tids
	}
	before, err := strconv.Atoi(slack("self"))
	if err != nil {
		t.Fatal(err)
	}
	defer setTimerSlack(before)
	if err := setTimerSlack(7); err != nil {
		t.Fatal(err)
	}
	had := len(threads())
	// Threads started after inherit it: goroutines locked to threads of
	// their own, all waiting at once, make the runtime start more.
	release := make(chan struct{})
	var started sync.WaitGroup
	const locked = 16
	for range locked {
		started.Add(1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with it
			started.Done()
			<-release
		}()
	}
	started.Wait()
	defer close(release)
	tids := threads()
	if len(tids) <= had {
		t.Fatalf("%d threads before, %d with %d goroutines locked to threads: none started", had, len(tids), locked)
	}
	for _, tid := range tids {
		if got := slack(tid); got != "7" {
			t.Errorf("thread %s: timer slack %s ns, want 7", tid, got)
		}
	}
}
