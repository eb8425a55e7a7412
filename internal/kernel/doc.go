// Package kernel is the only package that talks to cilium/ebpf. It loads the
// flow programs, attaches them to interfaces (tcx, or clsact where tcx is
// missing), alternates and drains the in-kernel flow tables, and reads the
// loss counters. It returns plain Go values; it never builds pdata.
package kernel
