// Package backendtest runs the real backends the examples feed (Debian's
// Prometheus, Jaeger v2) as processes of a test, on loopback, and queries them through
// their own HTTP APIs.
package backendtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Prometheus is a running Prometheus server with the remote-write receiver
// and exemplar storage on.
type Prometheus struct {
	URL string // http://127.0.0.1:port
}

// StartPrometheus runs /usr/bin/prometheus (Debian's package; scripts/deps.sh
// installs it) until the end of the test, with an empty scrape config.
func StartPrometheus(tb testing.TB) *Prometheus {
	tb.Helper()
	bin, err := exec.LookPath("prometheus")
	require.NoError(tb, err, "prometheus is not installed (scripts/deps.sh test installs Debian's package)")
	dir := tb.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(tb, os.WriteFile(cfg, []byte("global: {scrape_interval: 15s}\n"), 0o600))
	addr := FreeAddr(tb)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage")
	p := &Prometheus{URL: "http://" + addr}
	run(tb, cmd, dir, p.URL+"/-/ready")
	return p
}

// FreeAddr is a loopback address with a port free now (for a server a
// test starts).
func FreeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	defer l.Close()
	return l.Addr().String()
}

// Sample is one series of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query evaluates an instant PromQL query now (GET /api/v1/query).
func (p *Prometheus) Query(tb testing.TB, q string) []Sample {
	tb.Helper()
	var res struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	p.get(tb, "/api/v1/query?query="+url.QueryEscape(q), &res)
	require.Equal(tb, "success", res.Status, "%s: %s", q, res.Error)
	out := make([]Sample, 0, len(res.Data.Result))
	for _, r := range res.Data.Result {
		v, err := strconv.ParseFloat(fmt.Sprint(r.Value[1]), 64)
		require.NoError(tb, err)
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out
}

// Exemplar is one exemplar of a series (GET /api/v1/query_exemplars).
type Exemplar struct {
	Labels map[string]string `json:"labels"`
	Value  string            `json:"value"`
}

// Exemplars returns the exemplars of the series q selects in the last hour.
func (p *Prometheus) Exemplars(tb testing.TB, q string) []Exemplar {
	tb.Helper()
	var res struct {
		Status string `json:"status"`
		Data   []struct {
			Exemplars []Exemplar `json:"exemplars"`
		} `json:"data"`
	}
	now := time.Now()
	p.get(tb, fmt.Sprintf("/api/v1/query_exemplars?query=%s&start=%d&end=%d", url.QueryEscape(q), now.Add(-time.Hour).Unix(), now.Unix()+60), &res)
	require.Equal(tb, "success", res.Status)
	var out []Exemplar
	for _, d := range res.Data {
		out = append(out, d.Exemplars...)
	}
	return out
}

func (p *Prometheus) get(tb testing.TB, path string, v any) { getJSON(tb, p.URL+path, v) }

// getJSON decodes what GET u returns into v.
func getJSON(tb testing.TB, u string, v any) {
	tb.Helper()
	resp, err := http.Get(u)
	require.NoError(tb, err)
	defer resp.Body.Close()
	require.Equal(tb, http.StatusOK, resp.StatusCode, u)
	require.NoError(tb, json.NewDecoder(resp.Body).Decode(v))
}

// PanelQuery is one query of one panel of a Grafana dashboard.
type PanelQuery struct {
	Panel, Expr string
}

// DashboardQueries reads a dashboard's JSON and returns every Prometheus
// query of every panel (rows' nested panels too) and its variables' queries.
func DashboardQueries(tb testing.TB, path string) (panels []PanelQuery, variables []string) {
	tb.Helper()
	b, err := os.ReadFile(path)
	require.NoError(tb, err)
	type panel struct {
		Title   string  `json:"title"`
		Type    string  `json:"type"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(tb, json.Unmarshal(b, &d))
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, t := range p.Targets {
				panels = append(panels, PanelQuery{Panel: p.Title, Expr: t.Expr})
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && v.Type == "query" {
			variables = append(variables, q)
		}
	}
	return panels, variables
}

// LabelValues is GET /api/v1/label/<label>/values?match[]=<match>.
func (p *Prometheus) LabelValues(tb testing.TB, label, match string) []string {
	tb.Helper()
	var res struct {
		Status string   `json:"status"`
		Data   []string `json:"data"`
	}
	p.get(tb, fmt.Sprintf("/api/v1/label/%s/values?match[]=%s", label, url.QueryEscape(match)), &res)
	require.Equal(tb, "success", res.Status)
	return res.Data
}

// run starts cmd (its output in dir) until the end of the test, and waits
// until ready answers 200. The output is logged if the test failed.
func run(tb testing.TB, cmd *exec.Cmd, dir, ready string) {
	tb.Helper()
	name := filepath.Base(cmd.Path)
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	require.NoError(tb, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(tb, cmd.Start())
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if tb.Failed() {
			b, _ := os.ReadFile(logf.Name())
			tb.Logf("%s log:\n%s", name, b)
		}
	})
	require.Eventually(tb, func() bool {
		resp, err := http.Get(ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "%s ready (%s)", name, ready)
}
