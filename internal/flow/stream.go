package flow

// Stream completes one interval's flows a part at a time, as the kernel side
// drains them, so that an interval's flows need not all be in memory: Learn
// the flows first where it matters (a pod new in the interval: its address
// may be in any part), then hand the parts to Flows, which learns from each
// part too (with what earlier intervals taught, enough for a known pod),
// then End. The joins of a flow need only the
// interval's other parts (drops, connections, UDP destinations, DNS
// lookups), which the batch holds from the start, and what was learnt. What
// needs every flow of the interval waits for End, and so do the flows it
// decides for, which End returns (held: copies):
//   - the first flow of each packet drop's key (the drop goes on it when it
//     is the key's only flow): at most one flow a drop;
//   - the flows a NetworkPolicy denies: whether the denial was enforced is
//     known once every delivered flow was seen, which the Stream keeps as 8
//     bytes a received pod flow.
//
// Not safe for concurrent use.
type Stream struct {
	j         *Joiner
	b         *Batch
	started   bool // the parts began: learning is over
	conns     ConnIndex
	dialed    DialedIndex
	drops     *dropCandidates // nil: no packet drop
	delivered *deliveredSet   // nil: no verdicts
	held      []Flow
	denied    []int // indexes into held
}

// Begin starts the batch b: its flows (b.Flows is not read) come through
// the Stream.
func (j *Joiner) Begin(b *Batch) *Stream {
	j.Endpoints.Begin()
	return &Stream{j: j, b: b}
}

// Learn learns from one of the interval's flows, before the first part;
// true when f's interface is known now (Endpoints.Learn).
func (s *Stream) Learn(f *Flow) bool { return s.j.Endpoints.Learn(f) }

// start completes what the batch holds besides its flows, once all flows
// were learnt.
func (s *Stream) start() {
	s.started = true
	j, b := s.j, s.b
	j.Endpoints.ResolveDrops(b, j.HostNetns)
	if j.DropPod != nil {
		for i := range b.Drops {
			if d := &b.Drops[i]; d.OnNode && d.CgroupID != 0 {
				d.PodUID = j.DropPod(d.CgroupID)
			}
		}
	}
	s.drops = newDropCandidates(b.Drops)
	if j.PerFlow {
		s.conns, s.dialed = NewConnIndex(b.Live, b.Closed), NewDialedIndex(b.UDPDialed)
	}
	j.NAT.Begin(b)
	if j.Policy != nil {
		s.delivered = newDeliveredSet()
	}
}

// Flows completes one part of the interval's flows in place and returns
// those that are done (part, its held flows taken out), valid until part is
// reused.
func (s *Stream) Flows(part []Flow) []Flow {
	if !s.started {
		s.start()
	}
	j := s.j
	for i := range part {
		j.Endpoints.Learn(&part[i])
	}
	for i := range part {
		j.Endpoints.ResolveFlow(&part[i])
	}
	if j.PerFlow {
		p := &Batch{Flows: part}
		s.conns.Annotate(p)
		s.dialed.Annotate(p, j.Backs)
		for i := range part {
			j.NAT.Flow(&part[i])
		}
	}
	n := 0
	for i := range part {
		f := &part[i]
		cand := s.drops.see(f, len(s.held))
		switch {
		case cand != nil && cand.flows == 1:
			s.held = append(s.held, *f) // the drops may be its: judged at End
			continue
		case s.delivered == nil:
		default:
			if deliverable(f) {
				if h := s.delivered.key(flowKeyOf(f)); cand == nil {
					s.delivered.add(h)
				} else {
					cand.delivered = append(cand.delivered, h)
				}
			}
			if judge(f, j.Policy) {
				s.denied = append(s.denied, len(s.held))
				s.held = append(s.held, *f)
				continue
			}
		}
		part[n] = *f
		n++
	}
	return part[:n]
}

// End completes the flows it held, and the batch's drops (the ones a flow
// took are OnFlow), and ends the batch; the flows are valid until the next
// batch of the Joiner.
func (s *Stream) End() []Flow {
	if !s.started {
		s.start()
	}
	j := s.j
	if s.drops != nil {
		s.drops.attach(s.b.Drops, func(at int) *Flow { return &s.held[at] })
	}
	if s.delivered != nil {
		s.decide()
	}
	j.NAT.End()
	j.Endpoints.End()
	return s.held
}

// decide judges the flows held for drops and decides the denied ones'
// findings against everything the interval delivered.
func (s *Stream) decide() {
	var unattached map[dropFlowKey]uint64
	if s.drops != nil {
		unattached = s.drops.unattached(s.b.Drops)
		for _, c := range s.drops.order {
			f := &s.held[c.first]
			// The drops no single flow took count against all of the
			// key's flows: as many as their packets, none was delivered
			// (an enforced denial of new connections from one peer).
			if u := unattached[c.key]; u == 0 || u < c.packets {
				if deliverable(f) {
					s.delivered.add(s.delivered.key(flowKeyOf(f)))
				}
				for _, h := range c.delivered {
					s.delivered.add(h)
				}
			}
			if judge(f, s.j.Policy) {
				s.denied = append(s.denied, c.first)
			}
		}
	}
	for _, i := range s.denied {
		if f := &s.held[i]; !s.delivered.enforced(f) {
			f.Policy.Finding = FindingDeniedDelivered
		}
	}
}
