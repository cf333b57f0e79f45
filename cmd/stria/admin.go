package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
	"golang.org/x/sys/unix"
)

// The admin verbs work on paths inside a mount, as lfs does: layouts travel
// as the stria.layout xattr, and df finds the cluster through the mount's
// stria.nats xattr.

func runSetstripe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("setstripe", flag.ContinueOnError)
	count := fs.Int("c", api.DefaultStripeCount, "stripe count (-1: all OSTs)")
	sizeArg := fs.String("S", "1M", "stripe size, a multiple of 64K (suffixes K, M, G)")
	offset := fs.Int("i", -1, "index of the first OST (-1: any)")
	domArg := fs.String("dom", "0", "bytes at the start of each file kept on the metadata target (Data-on-MDT, as lfs setstripe -E SIZE -L mdt): a multiple of 64K up to 1M, 0 for none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: stria setstripe -c COUNT -S SIZE [-i START_OST] [--dom SIZE] PATH")
	}
	path := fs.Arg(0)
	size, err := parseSize(*sizeArg)
	if err != nil {
		return err
	}
	if size > api.MaxStripeSize {
		return fmt.Errorf("stripe size %s exceeds %d", *sizeArg, uint64(api.MaxStripeSize))
	}
	var dom uint64
	if *domArg != "0" {
		if dom, err = parseSize(*domArg); err != nil {
			return err
		}
		if dom > api.MaxDoMSize {
			return fmt.Errorf("data-on-MDT size %s exceeds %d", *domArg, api.MaxDoMSize)
		}
	}
	l := api.Layout{StripeCount: int32(*count), StripeSize: uint32(size), StripeOffset: int32(*offset), DoMSize: uint32(dom)}
	if err := l.ValidateRequest(-1); err != nil {
		return err
	}
	// Check against the OSTs that are up before anything is created, so
	// bad input changes nothing and the error says what is wrong (through
	// the mount it would only be EINVAL).
	_, statErr := os.Lstat(path)
	dir := path
	if statErr != nil {
		dir = filepath.Dir(path)
	}
	if st, _, err := clusterStatFS(ctx, dir, "", ""); err == nil {
		if err := checkLayoutAgainst(l, st.OSTs); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	value := l.XattrValue()
	created := false
	if errors.Is(statErr, os.ErrNotExist) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
		created = true
	}
	if err := unix.Setxattr(path, api.LayoutXattr, value, 0); err != nil {
		if created {
			os.Remove(path) // bad input changes nothing
		}
		return fmt.Errorf("%s: %w", path, explainXattr(err))
	}
	return nil
}

// checkLayoutAgainst refuses a requested layout the OSTs that are up cannot
// hold: more stripes than OSTs, or a first OST that is not up.
func checkLayoutAgainst(l api.Layout, osts []api.OSTStat) error {
	up := 0
	offsetUp := l.StripeOffset < 0
	for _, o := range osts {
		if o.Up {
			up++
			offsetUp = offsetUp || int64(o.Index) == int64(l.StripeOffset)
		}
	}
	if err := l.ValidateRequest(up); err != nil {
		return err
	}
	if !offsetUp {
		return api.Errorf(api.CodeInvalid, "stripe offset: OST %d is not up (%d OSTs up)", l.StripeOffset, up)
	}
	return nil
}

func explainXattr(err error) error {
	switch {
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("file already has data; its layout cannot change (%w)", err)
	case errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("invalid layout: more stripes than OSTs, or a bad size or offset (%w)", err)
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOTSUP):
		return fmt.Errorf("not on a stria mount (%w)", err)
	}
	return err
}

// parseSize reads 65536, 64K, 1M, 4G.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	t := strings.ToUpper(strings.TrimSpace(s))
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || n == 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func getxattr(path, name string) ([]byte, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func runGetstripe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("getstripe", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: stria getstripe PATH...")
	}
	for _, path := range fs.Args() {
		if err := getstripe(os.Stdout, path); err != nil {
			return err
		}
	}
	return nil
}

func getstripe(w io.Writer, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	raw, err := getxattr(path, api.LayoutXattr)
	if errors.Is(err, syscall.ENODATA) && st.IsDir() {
		d := api.DefaultLayout()
		fmt.Fprintf(w, "%s\nstripe_count:  %d stripe_size:   %d pattern:       raid0 stripe_offset: %d dom_size:      %d (filesystem default)\n\n", path, d.StripeCount, d.StripeSize, d.StripeOffset, d.DoMSize)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, explainXattr(err))
	}
	l, err := api.ParseLayout(raw)
	if err != nil {
		return err
	}
	if st.IsDir() {
		fmt.Fprintf(w, "%s\nstripe_count:  %d stripe_size:   %d pattern:       raid0 stripe_offset: %d dom_size:      %d\n\n", path, l.StripeCount, l.StripeSize, l.StripeOffset, l.DoMSize)
		return nil
	}
	first := l.StripeOffset
	if len(l.Objects) > 0 {
		first = int32(l.Objects[0].OST)
	}
	fmt.Fprintf(w, "%s\nlmm_stripe_count:  %d\nlmm_stripe_size:   %d\nlmm_pattern:       raid0\nlmm_layout_gen:    0\nlmm_stripe_offset: %d\n", path, l.StripeCount, l.StripeSize, first)
	if l.Pool != "" {
		fmt.Fprintf(w, "lmm_pool:          %s\n", l.Pool)
	}
	if l.DoMSize > 0 {
		fmt.Fprintf(w, "dom_size:          %d (bytes 0-%d on the metadata target)\n", l.DoMSize, l.DoMSize-1)
	}
	fmt.Fprintf(w, "\tobdidx\t\t objid\t\t objid\t\t group\n")
	for _, o := range l.Objects {
		fmt.Fprintf(w, "\t%6d\t%14d\t%#14x\t%14d\n", o.OST, o.ObjID, o.ObjID, 0)
	}
	fmt.Fprintln(w)
	return nil
}

func runDF(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("df", flag.ContinueOnError)
	human := fs.Bool("h", false, "print sizes in powers of 1024 (K, M, G, T)")
	natsURL := fs.String("nats", "", "NATS URL (default: read from the mount)")
	fsname := fs.String("fsname", "", "file system name (default: read from the mount)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path := "."
	if fs.NArg() > 0 {
		path = fs.Arg(0)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	r, fsn, err := clusterStatFS(ctx, path, *natsURL, *fsname)
	if err != nil {
		return err
	}
	printDF(os.Stdout, path, fsn, r, *human)
	return nil
}

// clusterStatFS asks the metadata service of the file system that path is
// in for its usage and OST list. natsURL and fsname, when empty, come from
// the mount's stria.nats and stria.fsname xattrs; it returns the fsname used.
func clusterStatFS(ctx context.Context, path, natsURL, fsname string) (api.StatFSResp, string, error) {
	var r api.StatFSResp
	if natsURL == "" {
		v, err := getxattr(path, api.NATSXattr)
		if err != nil {
			return r, "", fmt.Errorf("%s is not in a stria mount (give --nats): %w", path, err)
		}
		natsURL = string(v)
	}
	if fsname == "" {
		v, err := getxattr(path, api.FSNameXattr)
		if err != nil {
			return r, "", fmt.Errorf("%s is not in a stria mount (give --fsname): %w", path, err)
		}
		fsname = string(v)
	}
	nc, err := nats.Connect(natsURL, nats.Name("stria-admin"))
	if err != nil {
		return r, "", fmt.Errorf("nats at %s: %w", natsURL, err)
	}
	defer nc.Close()
	if err := api.NewMetaClient(nc, fsname, 15*time.Second).Call(ctx, api.OpStatFS, api.Empty{}, &r); err != nil {
		return r, "", err
	}
	return r, fsname, nil
}

func printDF(out io.Writer, mnt, fsname string, r api.StatFSResp, human bool) {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', tabwriter.AlignRight)
	size := func(b uint64) string {
		if human {
			return humanSize(b)
		}
		return strconv.FormatUint(b/1024, 10)
	}
	header := "1K-blocks"
	if human {
		header = "bytes"
	}
	fmt.Fprintf(w, "UUID\t%s\tUsed\tAvailable\tUse%%\tMounted on\t\n", header)
	row := func(name string, total, free, avail uint64, where string) {
		used := total - free
		pct := 0
		if used+avail > 0 {
			pct = int((used*100 + used + avail - 1) / (used + avail))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d%%\t%s\t\n", name, size(total), size(used), size(avail), pct, where)
	}
	row(fmt.Sprintf("%s-MDT0000_UUID", fsname), r.MetaTotal, r.MetaFree, r.MetaAvail, mnt+"[MDT:0]")
	var total, free, avail uint64
	for _, o := range r.OSTs {
		name := fmt.Sprintf("%s-OST%04x_UUID", fsname, o.Index)
		if !o.Up {
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\t%s[OST:%d] unavailable: %s\t\n", name, mnt, o.Index, o.Error)
			continue
		}
		row(name, o.Total, o.Free, o.Avail, fmt.Sprintf("%s[OST:%d]", mnt, o.Index))
		total, free, avail = total+o.Total, free+o.Free, avail+o.Avail
	}
	fmt.Fprintln(w, "\t\t\t\t\t\t")
	row("filesystem_summary:", total, free, avail, mnt)
	w.Flush()
	fmt.Fprintf(out, "\ninodes: %d used of %d; %d OSTs\n", r.Inodes, r.MaxInodes, len(r.OSTs))
}

func humanSize(b uint64) string {
	units := []string{"B", "K", "M", "G", "T", "P"}
	v := float64(b)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d%s", b, units[0])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}
