package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/ebpfnet/ebpfnet/internal/flow"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConnEventLayout checks the Go layout bpf2go generated against the size
// the BPF object's BTF gives struct conn_event: a record the kernel writes
// decodes field for field.
func TestConnEventLayout(t *testing.T) {
	spec, err := loadEbpfnet()
	require.NoError(t, err)
	typ, err := spec.Types.AnyTypeByName("conn_event")
	require.NoError(t, err)
	size, err := sizeOf(typ)
	require.NoError(t, err)
	require.Equal(t, size, ConnEventSize)
}

func TestDecodeConnEvent(t *testing.T) {
	in := ConnEvent{Cookie: 42, StartNs: 1, EstablishedNs: 2, EndNs: 3, BytesAcked: 1000, BytesReceived: 2000,
		SegsIn: 5, SegsOut: 6, TotalRetrans: 1, SrttUs: 120, MinRttUs: 100, ClientIsn: 0xdeadbeef, ServerIsn: 0x01020304,
		Pid: 77, SkErr: -111, Netns: 4026531840, LocalPort: 40000, RemotePort: 80, Family: 4, Role: uint8(flow.Client), Result: uint8(flow.Refused)}
	copy(in.Comm[:], []int8{'c', 'u', 'r', 'l'})
	var buf bytes.Buffer
	require.NoError(t, binary.Write(&buf, binary.LittleEndian, &in))
	require.Equal(t, ConnEventSize, buf.Len())
	var out ConnEvent
	require.NoError(t, DecodeConnEvent(append(buf.Bytes(), 0xff, 0xff), &out), "ringbuf records may be padded")
	require.Equal(t, in, out)
	require.ErrorIs(t, DecodeConnEvent(buf.Bytes()[:ConnEventSize-1], &out), ErrShortRecord)
}

// FuzzDecodeConnEvent: any byte string decodes or is rejected with
// ErrShortRecord; nothing panics, and a decoded record re-encodes to its input.
func FuzzDecodeConnEvent(f *testing.F) {
	f.Add(make([]byte, ConnEventSize))
	f.Add([]byte{1, 2, 3})
	f.Add(bytes.Repeat([]byte{0xff}, ConnEventSize+7))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var e ConnEvent
		err := DecodeConnEvent(raw, &e)
		if len(raw) < ConnEventSize {
			if !errors.Is(err, ErrShortRecord) {
				t.Fatalf("short record: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := binary.Write(&buf, binary.LittleEndian, &e); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), raw[:ConnEventSize]) {
			t.Fatal("decode/encode round trip differs")
		}
	})
}

func TestCgroup2FromMountinfo(t *testing.T) {
	hybrid := `25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd`
	got, err := cgroup2FromMountinfo(hybrid)
	require.NoError(t, err)
	require.Equal(t, "/sys/fs/cgroup/unified", got)
	unified := `31 24 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot`
	got, err = cgroup2FromMountinfo(unified)
	require.NoError(t, err)
	require.Equal(t, "/sys/fs/cgroup", got)
	_, err = cgroup2FromMountinfo("35 33 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu")
	require.Error(t, err)
}

// TestCgroup2Dir: a cgroup2 mount is taken as is; the host's cgroup root of
// a hybrid machine (a v1 tmpfs with the cgroup2 mount at unified/) resolves
// to that; anything else is an error naming the path.
func TestCgroup2Dir(t *testing.T) {
	root, err := Cgroup2Root()
	require.NoError(t, err, "the receiver needs a cgroup2 mount")
	got, err := Cgroup2Dir(root)
	require.NoError(t, err)
	require.Equal(t, root, got)
	if filepath.Base(root) == "unified" {
		got, err = Cgroup2Dir(filepath.Dir(root))
		require.NoError(t, err)
		require.Equal(t, root, got, "the hybrid layout's cgroup2 mount under the v1 root")
	}
	_, err = Cgroup2Dir(t.TempDir())
	require.ErrorContains(t, err, "is not a cgroup2 hierarchy")
}
