package ebpfnetreceiver

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
)

// signalComponent is a component shared by signals. The collector shuts
// the signals' pipelines down one at a time, each receiver before its own
// consumers, in no order across signals, and a shared exporter (the file
// exporter) stops at its first Shutdown: so every handle's Shutdown reaches
// the component, the last with last set (no handle is left running).
type signalComponent interface {
	Start(ctx context.Context, host component.Host) error
	Shutdown(ctx context.Context, last bool) error
}

// sharedComponents keeps one component per key (a receiver config), shared
// by every signal pipeline that names the receiver: the collector calls
// CreateMetrics, CreateLogs and CreateTraces separately for one component.
// The pattern of contrib's internal/sharedcomponent (not importable), with
// one difference: every handle's Shutdown reaches the component, so that
// it can hand every signal its final data at the first, before any
// consumer stops, and release itself at the last.
type sharedComponents[K comparable, C signalComponent] struct {
	mu sync.Mutex
	m  map[K]*shared[C]
}

func newSharedComponents[K comparable, C signalComponent]() *sharedComponents[K, C] {
	return &sharedComponents[K, C]{m: make(map[K]*shared[C])}
}

// get returns the shared component of key, made by create if there is none;
// it is forgotten when its last handle shuts down.
func (s *sharedComponents[K, C]) get(key K, create func() C) *shared[C] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.m[key]; ok {
		return c
	}
	c := newShared(create())
	c.remove = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.m, key)
	}
	s.m[key] = c
	return c
}

// shared is one component and the count of its handles.
type shared[C signalComponent] struct {
	c       C
	mu      sync.Mutex
	handles int
	running int
	remove  func()
}

func newShared[C signalComponent](c C) *shared[C] { return &shared[C]{c: c} }

// handle returns a new signal's view of the component.
func (s *shared[C]) handle() *sharedHandle[C] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handles++
	return &sharedHandle[C]{s: s}
}

// sharedHandle is one signal's view: the first Start starts the component,
// each Shutdown of a started handle reaches it, the last with last set.
type sharedHandle[C signalComponent] struct {
	s       *shared[C]
	once    sync.Once
	started bool
}

func (h *sharedHandle[C]) Start(ctx context.Context, host component.Host) error {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == 0 {
		if err := s.c.Start(ctx, host); err != nil {
			return err
		}
	}
	s.running++
	h.started = true
	return nil
}

// Shutdown is safe without Start and when called twice.
func (h *sharedHandle[C]) Shutdown(ctx context.Context) error {
	var err error
	h.once.Do(func() {
		s := h.s
		s.mu.Lock()
		s.handles--
		last := s.handles == 0
		running := 0
		if h.started {
			s.running--
			running = s.running
		}
		s.mu.Unlock()
		if h.started {
			err = s.c.Shutdown(ctx, running == 0)
		}
		if last && s.remove != nil {
			s.remove()
		}
	})
	return err
}
