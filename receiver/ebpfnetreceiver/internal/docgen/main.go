// Command docgen completes documentation.md, which mdatagen generates from
// metadata.yaml, with what mdatagen v0.159.0 cannot generate: the histograms
// of histograms.yaml and the spans of spans.yaml, in the same table form.
// `make generate` runs it after mdatagen (the receiver's doc.go), in the
// receiver's directory.
package main

import (
	"fmt"
	"log"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

const marker = "\n## Histograms\n"

type attribute struct {
	Description string   `json:"description"`
	Type        string   `json:"type"`
	Enum        []string `json:"enum"`
}

type file struct {
	Attributes map[string]attribute `json:"attributes"`
	Histograms map[string]struct {
		Description string `json:"description"`
		Unit        string `json:"unit"`
		Histogram   struct {
			Temporality string    `json:"aggregation_temporality"`
			Bounds      []float64 `json:"bucket_boundaries"`
		} `json:"histogram"`
		Attributes []string `json:"attributes"`
	} `json:"histograms"`
	Spans map[string]any `json:"spans"`
}

func read(name string) file {
	raw, err := os.ReadFile(name)
	if err != nil {
		log.Fatal(err)
	}
	var f file
	if err := yaml.Unmarshal(raw, &f); err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	return f
}

func main() {
	md, hist, spans := read("metadata.yaml"), read("histograms.yaml"), read("spans.yaml")
	attrs := md.Attributes
	for k, v := range spans.Attributes {
		attrs[k] = v
	}
	doc, err := os.ReadFile("documentation.md")
	if err != nil {
		log.Fatal(err)
	}
	out := string(doc)
	if i := strings.Index(out, marker); i >= 0 {
		out = out[:i+1]
	}
	var b strings.Builder
	b.WriteString(marker[1:])
	b.WriteString("\nIn histograms.yaml until mdatagen can generate histograms (v0.159.0 cannot); enabled, not configurable.\n")
	for _, name := range sortedKeys(hist.Histograms) {
		h := hist.Histograms[name]
		fmt.Fprintf(&b, "\n### %s\n\n%s\n\n", name, h.Description)
		b.WriteString("| Unit | Metric Type | Value Type | Aggregation Temporality | Bucket Bounds |\n| ---- | ----------- | ---------- | ----------------------- | ------------- |\n")
		fmt.Fprintf(&b, "| %s | Histogram | Double | %s | %s |\n", h.Unit, strings.ToUpper(h.Histogram.Temporality[:1])+h.Histogram.Temporality[1:],
			strings.Trim(strings.Join(strings.Fields(fmt.Sprint(h.Histogram.Bounds)), ", "), "[]"))
		attributeTable(&b, h.Attributes, attrs)
	}
	b.WriteString("\n## Spans\n\nFrom spans.yaml: one span per TCP connection side.\n")
	s := spans.Spans
	for _, name := range sortedKeys(s) {
		if v, ok := s[name].(map[string]any); ok && v["description"] != nil {
			fmt.Fprintf(&b, "\n### %s\n\n%s\n", name, v["description"])
		}
	}
	names := []string{}
	for _, a := range s["attributes"].([]any) {
		names = append(names, a.(string))
	}
	b.WriteString("\n### Span attributes\n")
	attributeTable(&b, names, attrs)
	events := sortedKeys(s["events"].(map[string]any))
	fmt.Fprintf(&b, "\n### Span events\n\n%s\n", strings.Join(events, ", "))
	if err := os.WriteFile("documentation.md", []byte(out+b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

func attributeTable(b *strings.Builder, names []string, attrs map[string]attribute) {
	b.WriteString("\n| Name | Description | Values |\n| ---- | ----------- | ------ |\n")
	for _, n := range names {
		a, ok := attrs[n]
		if !ok {
			log.Fatalf("attribute %s is not declared", n)
		}
		values := "Any " + a.Type
		if len(a.Enum) > 0 {
			values = "``" + strings.Join(a.Enum, "``, ``") + "``"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", n, a.Description, values)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
