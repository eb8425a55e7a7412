package ebpfnetreceiver

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
)

// sharedComponents keeps one component per key (a receiver config), shared
// by every signal pipeline that names the receiver: the collector calls
// CreateMetrics, CreateLogs and CreateTraces separately for one component.
// The pattern of contrib's internal/sharedcomponent (not importable), with
// one difference: the component stops at the last handle's Shutdown, not the
// first, so that a signal still running keeps receiving the final data. The
// component knows nothing of the sharing.
type sharedComponents[K comparable, C component.Component] struct {
	mu sync.Mutex
	m  map[K]*shared[C]
}

func newSharedComponents[K comparable, C component.Component]() *sharedComponents[K, C] {
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
type shared[C component.Component] struct {
	c       C
	mu      sync.Mutex
	handles int
	running int
	remove  func()
}

func newShared[C component.Component](c C) *shared[C] { return &shared[C]{c: c} }

// handle returns a new signal's view of the component.
func (s *shared[C]) handle() *sharedHandle[C] {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handles++
	return &sharedHandle[C]{s: s}
}

// sharedHandle is one signal's view: the first Start starts the component,
// the last Shutdown of a started handle stops it.
type sharedHandle[C component.Component] struct {
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
		stop := false
		if h.started {
			s.running--
			stop = s.running == 0
		}
		s.mu.Unlock()
		if stop {
			err = s.c.Shutdown(ctx)
		}
		if last && s.remove != nil {
			s.remove()
		}
	})
	return err
}
