package ebpfnetreceiver

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"
)

// sharedPipelines maps a config to its one kernel pipeline. The collector
// calls CreateMetrics and CreateLogs separately for the same component; both
// get handles on the same pipeline, which starts with the first Start and
// stops with the last Shutdown (the pattern of the core OTLP receiver's
// internal sharedcomponent package, which is not importable).
type sharedPipelines struct {
	mu sync.Mutex
	m  map[*Config]*pipeline
}

func newSharedPipelines() *sharedPipelines {
	return &sharedPipelines{m: make(map[*Config]*pipeline)}
}

func (s *sharedPipelines) get(cfg *Config, set receiver.Settings) *pipeline {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.m[cfg]; ok {
		return p
	}
	p := newPipeline(cfg, set, loadDatapath)
	p.onLastShutdown = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.m, cfg)
	}
	s.m[cfg] = p
	return p
}

// handle is one signal's view of a shared pipeline.
type handle struct {
	p       *pipeline
	once    sync.Once
	started bool
}

func (p *pipeline) handle() *handle {
	p.mu.Lock()
	p.handles++
	p.mu.Unlock()
	return &handle{p: p}
}

func (h *handle) Start(ctx context.Context, host component.Host) error {
	if err := h.p.start(ctx, host); err != nil {
		return err
	}
	h.started = true
	return nil
}

// Shutdown is safe without Start and when called twice.
func (h *handle) Shutdown(ctx context.Context) error {
	var err error
	h.once.Do(func() { err = h.p.release(ctx, h.started) })
	return err
}
