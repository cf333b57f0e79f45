// Command chart turns the raw measurements of scripts/compare.sh into the
// report: medians per system, the ratios Stria ÷ each other system, a
// markdown table (results.md), every round's figure (rounds.md), the
// medians as JSON (results.json) and one PNG bar chart per pass, drawn by
// gnuplot (chart-<pass>.png).
//
//	chart -dir RESULTS [-systems native,loopback,stria,...] [-note TEXT] [-notes FILE] [-gnuplot gnuplot]
//
// RESULTS/raw/<pass>/<system>/r<round>/ holds fio's JSON (seqwrite.json,
// seqread.json, randread.json), mdbench's (md.json) and, when something
// failed, errors.txt.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

var labels = map[string]string{
	"native":    "native",
	"loopback":  "go-fuse loopback",
	"stria":     "Stria",
	"moosefs":   "MooseFS",
	"glusterfs": "GlusterFS",
	"seaweedfs": "SeaweedFS",
}

// peers are the other file systems Stria must lead; native and the
// loopback are references.
var peers = map[string]bool{"moosefs": true, "glusterfs": true, "seaweedfs": true}

var colors = map[string]string{
	"native":    "#7f7f7f",
	"loopback":  "#b0b0b0",
	"stria":     "#d62728",
	"moosefs":   "#1f77b4",
	"glusterfs": "#2ca02c",
	"seaweedfs": "#9467bd",
}

func label(sys string) string {
	if l, ok := labels[sys]; ok {
		return l
	}
	return sys
}

type fioOut struct {
	Jobs []struct {
		Error int `json:"error"`
		Read  struct {
			BwBytes float64 `json:"bw_bytes"`
			IOPS    float64 `json:"iops"`
		} `json:"read"`
		Write struct {
			BwBytes float64 `json:"bw_bytes"`
			IOPS    float64 `json:"iops"`
		} `json:"write"`
	} `json:"jobs"`
}

type mdOut struct {
	Results []struct {
		Name  string  `json:"name"`
		Unit  string  `json:"unit"`
		Value float64 `json:"value"`
	} `json:"results"`
	Errors []string `json:"errors"`
}

// pass holds one pass's samples: metric → system → values by round.
type pass struct {
	name    string
	metrics []string
	samples map[string]map[string][]float64
	rounds  map[string]map[string][]string // round name of each sample
	errors  []string
	nRounds map[string]int // rounds attempted per system
}

func (p *pass) add(metric, sys, round string, v float64) {
	if _, ok := p.samples[metric]; !ok {
		p.samples[metric] = map[string][]float64{}
		p.rounds[metric] = map[string][]string{}
		p.metrics = append(p.metrics, metric)
	}
	p.samples[metric][sys] = append(p.samples[metric][sys], v)
	p.rounds[metric][sys] = append(p.rounds[metric][sys], round)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// fio may print notes before its JSON.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	return json.Unmarshal(b, v)
}

var fioMetrics = []struct {
	file, metric string
	value        func(f *fioOut) float64
}{
	{"seqwrite.json", "seq write 1 MiB + fsync (MB/s)", func(f *fioOut) float64 { return f.Jobs[0].Write.BwBytes / 1e6 }},
	{"seqread.json", "cold seq read 1 MiB (MB/s)", func(f *fioOut) float64 { return f.Jobs[0].Read.BwBytes / 1e6 }},
	{"randread.json", "cold random read 4 KiB, 2 jobs (IOPS)", func(f *fioOut) float64 { return f.Jobs[0].Read.IOPS }},
}

func load(dir string, systems []string) ([]*pass, error) {
	passDirs, err := os.ReadDir(filepath.Join(dir, "raw"))
	if err != nil {
		return nil, err
	}
	var passes []*pass
	for _, pd := range passDirs {
		if !pd.IsDir() {
			continue
		}
		p := &pass{name: pd.Name(), samples: map[string]map[string][]float64{}, rounds: map[string]map[string][]string{}, nRounds: map[string]int{}}
		// Metrics in a fixed order: fio's first, then mdbench's as it
		// prints them.
		for _, fm := range fioMetrics {
			p.samples[fm.metric] = map[string][]float64{}
			p.rounds[fm.metric] = map[string][]string{}
			p.metrics = append(p.metrics, fm.metric)
		}
		for _, sys := range systems {
			roundDirs, _ := filepath.Glob(filepath.Join(dir, "raw", pd.Name(), sys, "r*"))
			sort.Slice(roundDirs, func(i, j int) bool { return roundNum(roundDirs[i]) < roundNum(roundDirs[j]) })
			for _, rd := range roundDirs {
				round := filepath.Base(rd)
				p.nRounds[sys]++
				if b, err := os.ReadFile(filepath.Join(rd, "errors.txt")); err == nil && len(bytes.TrimSpace(b)) > 0 {
					for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
						p.errors = append(p.errors, fmt.Sprintf("%s, %s: %s", label(sys), round, line))
					}
				}
				for _, fm := range fioMetrics {
					var f fioOut
					if err := readJSON(filepath.Join(rd, fm.file), &f); err != nil || len(f.Jobs) == 0 || f.Jobs[0].Error != 0 {
						continue
					}
					p.add(fm.metric, sys, round, fm.value(&f))
				}
				var md mdOut
				if err := readJSON(filepath.Join(rd, "md.json"), &md); err == nil {
					for _, r := range md.Results {
						p.add(fmt.Sprintf("%s (%s)", r.Name, r.Unit), sys, round, r.Value)
					}
				}
			}
		}
		passes = append(passes, p)
	}
	// disk first, then tmpfs, then anything else.
	rank := map[string]int{"disk": 0, "tmpfs": 1}
	sort.SliceStable(passes, func(i, j int) bool {
		ri, ok := rank[passes[i].name]
		if !ok {
			ri = 9
		}
		rj, ok := rank[passes[j].name]
		if !ok {
			rj = 9
		}
		return ri < rj
	})
	return passes, nil
}

func roundNum(dir string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "r"))
	return n
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// num formats a figure with thousands separators, one decimal below 100.
func num(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func short(v float64) string {
	switch {
	case math.IsNaN(v):
		return ""
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
}

func main() {
	dir := flag.String("dir", "", "results folder of one compare.sh run (required)")
	sysList := flag.String("systems", "native,loopback,stria,moosefs,glusterfs,seaweedfs", "systems, in column order")
	note := flag.String("note", "", "text put under the title (sizes, machine)")
	notesFile := flag.String("notes", "", "markdown file appended to results.md (how each system was set up)")
	gnuplot := flag.String("gnuplot", "gnuplot", "gnuplot binary; empty: no chart")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: chart -dir RESULTS [-systems a,b] [-note TEXT]")
		os.Exit(2)
	}
	systems := strings.Split(*sysList, ",")
	passes, err := load(*dir, systems)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}

	var md, rounds strings.Builder
	fmt.Fprintf(&md, "# Stria and its peers, side by side\n\n")
	if *note != "" {
		fmt.Fprintf(&md, "%s\n\n", *note)
	}
	fmt.Fprintf(&rounds, "# Every round's figure\n\nIn round order (r1, r2, …); the median is what results.md shows.\n\n")
	others := []string{}
	hasStria := false
	for _, s := range systems {
		if s == "stria" {
			hasStria = true
		} else {
			others = append(others, s)
		}
	}
	anyPeer := false
	for _, s := range systems {
		anyPeer = anyPeer || peers[s]
	}
	type jsonRow struct {
		Pass, Workload string
		Median         map[string]float64
		Samples        map[string][]float64
	}
	var jrows []jsonRow
	for _, p := range passes {
		fmt.Fprintf(&md, "## %s\n\n", p.name)
		var nr []string
		for _, s := range systems {
			nr = append(nr, fmt.Sprintf("%s %d", label(s), p.nRounds[s]))
		}
		fmt.Fprintf(&md, "Medians; higher is better. Rounds per system: %s.\n\n", strings.Join(nr, ", "))
		hdr := []string{"workload"}
		for _, s := range systems {
			hdr = append(hdr, label(s))
		}
		if hasStria {
			for _, s := range others {
				hdr = append(hdr, "Stria ÷ "+label(s))
			}
			if anyPeer {
				hdr = append(hdr, "Stria ÷ best peer")
			}
		}
		fmt.Fprintf(&md, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
		fmt.Fprintf(&rounds, "## %s\n\n| workload | system | median | rounds |\n|---|---|---|---|\n", p.name)
		for _, m := range p.metrics {
			med := map[string]float64{}
			row := []string{m}
			for _, s := range systems {
				v := p.samples[m][s]
				med[s] = median(v)
				cell := num(med[s])
				if n := len(v); n > 0 && n < p.nRounds[s] {
					cell += fmt.Sprintf(" (%d of %d)", n, p.nRounds[s])
				}
				row = append(row, cell)
				var all []string
				for i, x := range v {
					all = append(all, p.rounds[m][s][i]+" "+num(x))
				}
				fmt.Fprintf(&rounds, "| %s | %s | %s | %s |\n", m, label(s), num(med[s]), strings.Join(all, ", "))
			}
			if hasStria {
				best := math.NaN()
				for _, s := range others {
					row = append(row, ratio(med["stria"], med[s]))
					if peers[s] && !math.IsNaN(med[s]) && (math.IsNaN(best) || med[s] > best) {
						best = med[s]
					}
				}
				if anyPeer {
					row = append(row, ratio(med["stria"], best))
				}
			}
			fmt.Fprintf(&md, "| %s |\n", strings.Join(row, " | "))
			jrows = append(jrows, jsonRow{Pass: p.name, Workload: m, Median: finite(med), Samples: p.samples[m]})
		}
		if len(p.errors) > 0 {
			fmt.Fprintf(&md, "\nFailures in this pass (their figures are missing from the medians):\n\n")
			for _, e := range p.errors {
				fmt.Fprintf(&md, "- %s\n", e)
			}
		}
		fmt.Fprintln(&md)
		fmt.Fprintln(&rounds)
		if *gnuplot != "" {
			png := filepath.Join(*dir, "chart-"+p.name+".png")
			if err := chart(*gnuplot, *dir, p, systems, png); err != nil {
				fmt.Fprintf(os.Stderr, "chart: %s: %v\n", png, err)
			} else {
				fmt.Fprintf(&md, "Chart: [chart-%s.png](chart-%s.png)\n\n", p.name, p.name)
			}
		}
	}
	if *notesFile != "" {
		b, err := os.ReadFile(*notesFile)
		must(err)
		md.Write(b)
	}
	must(os.WriteFile(filepath.Join(*dir, "results.md"), []byte(md.String()), 0o644))
	must(os.WriteFile(filepath.Join(*dir, "rounds.md"), []byte(rounds.String()), 0o644))
	jb, _ := json.MarshalIndent(jrows, "", "  ")
	must(os.WriteFile(filepath.Join(*dir, "results.json"), jb, 0o644))
	fmt.Print(md.String())
}

func finite(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if !math.IsNaN(v) {
			out[k] = v
		}
	}
	return out
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

// gpString quotes s for gnuplot.
func gpString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// chart draws one small bar chart per workload, each with its own scale,
// the systems side by side in every panel, Stria in red.
func chart(gnuplot, dir string, p *pass, systems []string, png string) error {
	const cols = 4
	rows := (len(p.metrics) + cols - 1) / cols
	width, height := 1900, 80+rows*330
	var gp strings.Builder
	fmt.Fprintf(&gp, "set terminal pngcairo size %d,%d font 'DejaVu Sans,11' noenhanced\n", width, height)
	fmt.Fprintf(&gp, "set output %s\n", gpString(png))
	fmt.Fprintf(&gp, "set style fill solid 0.9 border -1\nset boxwidth 0.7\nset grid ytics lc rgb '#dddddd'\nunset key\n")
	fmt.Fprintf(&gp, "set xtics rotate by -30 nomirror font ',10'\nset ytics nomirror font ',9'\nset format y '%%.1s%%c'\n")
	fmt.Fprintf(&gp, "set multiplot layout %d,%d title %s font ',16'\n", rows, cols,
		gpString(fmt.Sprintf("Stria vs peers, pass %q: medians, higher is better (each panel has its own scale)", p.name)))
	for i, m := range p.metrics {
		fmt.Fprintf(&gp, "$d%d << EOD\n", i)
		max := 0.0
		for _, s := range systems {
			v := median(p.samples[m][s])
			shown, lbl := v, short(v)
			if math.IsNaN(v) {
				shown, lbl = 0, "n/a"
			}
			if shown > max {
				max = shown
			}
			col := colors[s]
			if col == "" {
				col = "#444444"
			}
			rgb, _ := strconv.ParseInt(strings.TrimPrefix(col, "#"), 16, 64)
			fmt.Fprintf(&gp, "%s %g %d %s\n", gpString(label(s)), shown, rgb, gpString(lbl))
		}
		fmt.Fprintf(&gp, "EOD\n")
		if max <= 0 {
			max = 1
		}
		fmt.Fprintf(&gp, "set title %s font ',12'\n", gpString(m))
		fmt.Fprintf(&gp, "set yrange [0:%g]\nset xrange [-0.6:%g]\n", max*1.18, float64(len(systems))-0.4)
		fmt.Fprintf(&gp, "plot $d%d using 0:2:3:xtic(1) with boxes lc rgb variable, '' using 0:2:4 with labels offset 0,0.7 font ',9'\n", i)
	}
	fmt.Fprintf(&gp, "unset multiplot\n")
	script := strings.TrimSuffix(png, ".png") + ".gp"
	if err := os.WriteFile(script, []byte(gp.String()), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(gnuplot, script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
